"""The `lift-local` command line: one command per LIFT phase, `run` for all of them, and helpers.

Commands read and write files; the phases themselves work on lists of records.
"""

from __future__ import annotations

import os

import click

# Nothing lift-local runs may reach a model hub: models come from PyPI packages or local folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="lift-local")
def main() -> None:
    """Curate instruction-tuning data the LIFT way with open-weight models, offline.

    \b
    Phases (each usable alone, IN and OUT are record files):
      enhance   regenerate every answer with the rewriter model
      expand    rewrite instructions into harder ones for K rounds, then answer them
      variety   keep the most diverse records (embeddings + PCA + row variance)
      quality   keep the top N records by judge score and length score
    run all four with resume:  lift-local run IN --out DIR
    """


# --- variety command ---

# --- enhance / expand / quality commands ---

# --- models command ---

# --- run command ---

# --- compare-judges command ---
