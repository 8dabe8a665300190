"""The dataset card: `README.md` beside `curated.jsonl`, as the Hugging Face Hub reads it.

Its YAML front matter is what the Hub indexes (licence when the user gave one, task category, size
category, source data set, and which file is the data: the run folder holds every phase's output too); the
text below is what a reader of the data needs, all from the run's manifest: the input and its hash, each
phase with its parameters and counts, the models and their weights' hashes, what decontamination removed,
the judge's score distributions, and the fine-tuning check of `lift-local ab` where it ran. `lift-local run`
writes it, and `lift-local ab RUN` writes it again with its results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCardData

from .manifest import Manifest
from .phases import all_phases
from .phases.quality import Summary
from .records import atomic_path

CARD = "README.md"
_SIZES = ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M"),
          (10**8, "10M<n<100M"), (10**9, "100M<n<1B"))
_LIFT = "[LIFT](https://arxiv.org/abs/2312.11508)"


def write_card(run_dir: Path) -> Path:
    """Write the card of a finished run into its folder; returns its path."""
    manifest = Manifest.load(run_dir)
    with atomic_path(run_dir / CARD) as tmp:
        tmp.write_text(card(manifest, Path(run_dir).resolve().name), encoding="utf-8")
    return run_dir / CARD


def card(manifest: Manifest, name: str) -> str:
    """The card's text: YAML front matter, then Markdown."""
    done = [entry for entry in manifest.phases.values() if entry.done]
    records = done[-1].records_out if done else manifest.input["records"]
    rewritten = any(entry.done for phase, entry in manifest.phases.items() if phase in ("enhance", "expand"))
    data = DatasetCardData(
        license=manifest.license,
        task_categories=["text-generation"],
        size_categories=[size_category(records)],
        source_datasets=[Path(manifest.input["path"]).name],
        tags=["lift-local", "instruction-tuning", *(["synthetic"] if rewritten else [])],
        pretty_name=name,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": manifest.curated}]}],
    )
    sections = [_summary(manifest, name, records), _source(manifest), _phases(manifest), _models(manifest),
                _decontamination(manifest), _judge(manifest), _ab(manifest), _licence(manifest)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(section for section in sections if section) + "\n"


def size_category(records: int) -> str:
    """The Hub's size category of a data set of `records` records."""
    return next((label for bound, label in _SIZES if records < bound), "1B<n<10B")


def _summary(manifest: Manifest, name: str, records: int) -> str:
    source = manifest.input
    sample = f", a seeded sample of {source['limit']} (seed {source['seed']})" if source.get("limit") else ""
    files = ", ".join(f"`{file}` ({fmt})" for fmt, file in manifest.exports.items())
    return (f"# {name}\n\n{records} instruction records curated from `{Path(source['path']).name}` "
            f"({source['records']} records{sample}) with lift-local, which follows the {_LIFT} method with "
            "open-weight models on the user's own machine.\n\n"
            f"`{manifest.curated}` holds one JSON object per line: `id`, `instruction`, `input`, `output`, the "
            "input's own fields, and lift-local's metadata under `lift` (where each record came from and the "
            f"scores it was selected by).{f' Also as {files}.' if files else ''}")


def _source(manifest: Manifest) -> str:
    source = manifest.input
    mapping = f"\n- fields mapped: {_inline(source['fields'])}" if source.get("fields") else ""
    # The file's name and hash: where it sat on the curating machine means nothing to a reader of the card.
    return (f"## Source\n\n- input: `{Path(source['path']).name}`\n- sha256: `{source['sha256']}`\n"
            f"- records read: {source['records']}{mapping}\n- lift-local {manifest.lift_local_version}")


def _phases(manifest: Manifest) -> str:
    notes = {cls.name: cls.notes for cls in all_phases()}
    rows = ["| phase | status | records in | records out | seconds | parameters | notes |",
            "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for phase, entry in manifest.phases.items():
        note = notes[phase](entry.stats) if entry.done and phase in notes else ""
        rows.append(f"| {phase} | {entry.status} | {_blank(entry.records_in)} | {_blank(entry.records_out)} | "
                    f"{_blank(entry.seconds)} | {_cell(_inline(entry.params))} | {_cell(note)} |")
    return "## How it was made\n\n" + "\n".join(rows)


def _models(manifest: Manifest) -> str:
    rows = ["| role | model | weights sha256 |", "| --- | --- | --- |"]
    rows += [f"| {role} | `{model}` | {_digests(manifest.model_sha256.get(role))} |"
             for role, model in manifest.models.items()]
    return "## Models\n\n" + "\n".join(rows)


def _decontamination(manifest: Manifest) -> str:
    entry = manifest.phases.get("decontaminate")
    if entry is None or not entry.done:
        return "## Decontamination\n\nNot run: the data may contain benchmark test items."
    stats = entry.stats
    found = "\n".join(f"| {name} | {stats['items'].get(name, 0)} | {count} |" for name, count in stats["by_benchmark"].items())
    methods = _inline(stats["by_method"])
    return (f"## Decontamination\n\n{stats['removed']} of {stats['records_in']} records contained a benchmark test "
            f"item and were removed ({methods}).\n\n| benchmark | test items checked | records removed |\n"
            f"| --- | ---: | ---: |\n{found}")


def _judge(manifest: Manifest) -> str:
    entry = manifest.phases.get("quality")
    if entry is None or not entry.done:
        return ""
    stats = entry.stats
    lines = [Summary(**summary).line() for summary in stats["scores"].values()]
    warnings = "".join(f"\n\nWarning: {warning}." for warning in stats.get("warnings", []))
    return (f"## Judge scores\n\nThe judge scored {stats['ok']} of {stats['records']} records (0 to each maximum; "
            f"the histogram runs from 0 on the left to the maximum on the right); the {stats['kept']} with the "
            f"highest final quality were kept.\n\n```text\n" + "\n".join(lines) + f"\n```{warnings}")


def _ab(manifest: Manifest) -> str:
    ab = manifest.ab
    if not ab:
        return ("## Fine-tuning check\n\nNot run. `lift-local ab` on this run folder fine-tunes a small model on "
                "this set, on a random set of the same size and on the whole input, and compares them on benchmarks.")
    from .ab.results import text  # imports the statistics and benchmark modules only when there are results

    recipe = _inline(ab["recipe"]) + (f", computed in {ab['precision']}" if "precision" in ab else "")
    return (f"## Fine-tuning check\n\n`lift-local ab` fine-tuned `{ab['base']['name']}` (LoRA) on each arm with one "
            f"recipe ({recipe}) and evaluated each model on the same items:\n\n```text\n{text(ab)}\n```")


def _licence(manifest: Manifest) -> str:
    chosen = f"The curated data is given under `{manifest.license}`. " if manifest.license else \
        "No licence was given for the curated data (`lift-local run --license`). "
    return (f"## Licence\n\n{chosen}Its records derive from `{Path(manifest.input['path']).name}`, whose licence "
            "applies to them as well, and from the outputs of the models above.")


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items()) if values else ""


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def _digests(values: list[str] | None) -> str:
    return " + ".join(f"`{value}`" for value in values) if values else "not here (served, or not present)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
