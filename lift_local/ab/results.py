"""What `lift-local ab` found, in numbers and in words: every model's score on every benchmark with its 95%
bootstrap interval, every pair of models compared item by item (difference, interval, paired test, a
sentence), and the same as a table, a figure and a section of a run's report.

Never a bare point estimate: with the few hundred items a CPU can afford, differences of a few points are
within chance, and the sentences say so (`stats.sentence`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .. import figures, stats
from ..figures import BLUE, GREY, Plot, as_plot, duration, e, figure_html, new_figure
from ..records import atomic_path
from .benchmarks import BENCHMARKS
from .evaluate import HELDOUT, ItemScores

RESULTS = "results.json"
TABLE = "table.txt"
FIGURE = "ab.png"


def statistics(scores: Mapping[str, Mapping[str, ItemScores]], arms: Sequence[str], *, base: str) -> dict[str, Any]:
    """`scores[model][benchmark]` as JSON-ready results: `scores` per model and benchmark (score, ci_low, ci_high,
    n, kind) and `pairs`: every arm against every other, then every arm against the base model."""
    models = [base, *arms]
    benchmarks = list(scores[base])
    table = {model: {name: _score(scores[model][name]) for name in benchmarks} for model in models}
    pairs = []
    for a, b in [*itertools.combinations(arms, 2), *((arm, base) for arm in arms)]:
        for name in benchmarks:
            x, y = scores[a][name], scores[b][name]
            if x.ids != y.ids:
                raise ValueError(f"{a} and {b} were evaluated on different items of {name}")
            difference = stats.paired_difference(x.values, y.values, kind=x.kind)
            pairs.append({"a": a, "b": b, "benchmark": name, "difference": difference.difference,
                          "ci_low": difference.ci_low, "ci_high": difference.ci_high, "p_value": difference.p_value,
                          "test": difference.test, "n": difference.n,
                          "sentence": stats.sentence(a, b, title(name), difference, x.kind)})
    return {"scores": table, "pairs": pairs}


def title(benchmark: str) -> str:
    return "held-out NLL" if benchmark == HELDOUT else BENCHMARKS[benchmark].title


def write(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """results.json, the table as printed and the figure."""
    with atomic_path(out_dir / RESULTS) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out_dir / TABLE) as tmp:
        tmp.write_text(text(summary) + "\n", encoding="utf-8")
    with figures.style(), atomic_path(out_dir / FIGURE) as tmp:
        figure(summary).savefig(tmp, format="png", dpi=120)


def text(summary: Mapping[str, Any]) -> str:
    """The table (score and 95% interval per model and benchmark) and a sentence per comparison."""
    table = summary["scores"]
    benchmarks = list(next(iter(table.values())))
    header = ["model", *(f"{title(name)}{' (lower is better)' if name == HELDOUT else ''}" for name in benchmarks)]
    rows = [header] + [[_model_label(model, summary), *(_cell(table[model][name]) for name in benchmarks)]
                       for model in table]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    accuracy = "accuracy in %" if any(name != HELDOUT for name in benchmarks) else ""
    nll = "held-out: mean negative log-likelihood per answer token" if HELDOUT in benchmarks else ""
    lines.insert(1, "")
    lines += ["", f"95% bootstrap intervals over items in brackets; {'; '.join(filter(None, (accuracy, nll)))}.", ""]
    lines += [f"- {pair['sentence']}" for pair in summary["pairs"]]
    return "\n".join(lines)


def figure(summary: Mapping[str, Any]) -> Figure:
    """One panel per benchmark: every model's score with its 95% interval, the base model in grey."""
    table = summary["scores"]
    models = list(table)
    benchmarks = list(table[models[0]])
    fig, axes = new_figure(2.6 * len(benchmarks) + 1.6, 0.4 * len(models) + 1.2, ncols=len(benchmarks))
    for ax, name in zip(axes, benchmarks):
        scale = 1 if name == HELDOUT else 100
        cells = [table[model][name] for model in models]
        values, lows, highs = ([scale * cell[key] for cell in cells] for key in ("score", "ci_low", "ci_high"))
        figures.interval_bars(ax, models, values, lows, highs, [GREY, *[BLUE] * (len(models) - 1)])
        if ax is not axes[0]:
            ax.tick_params(labelleft=False)
        ax.set_title(title(name))
        ax.set_xlabel("NLL per token (lower is better)" if name == HELDOUT else "accuracy %")
    return fig


def report_section(ab: Mapping[str, Any], run_name: str) -> tuple[str, list[Plot]]:
    """The run report's section: the table, the sentences and the figure of the run's `ab` entry."""
    title_html = "<h2>Fine-tuning check (lift-local ab)</h2>"
    if not ab:
        return (f'{title_html}\n<p class="muted">Not run: <code>lift-local ab {e(run_name)}</code> fine-tunes the '
                "student model on the curated set, a random set of the same size and the whole input, and "
                "compares them.</p>"), []
    table = ab["scores"]
    benchmarks = list(next(iter(table.values())))
    head = "<th>Model</th>" + "".join(f'<th class="num">{e(title(name))}</th>' for name in benchmarks)
    rows = "".join(
        f"<tr><th>{e(_model_label(model, ab))}</th>"
        + "".join(f'<td class="num">{e(_cell(table[model][name]))}</td>' for name in benchmarks) + "</tr>"
        for model in table
    )
    sentences = "".join(f"<li>{e(pair['sentence'])}</li>" for pair in ab["pairs"])
    recipe = ", ".join(f"{key} {value}" for key, value in ab["recipe"].items())
    precision = f", computed in {ab['precision']}" if "precision" in ab else ""  # results before it was stored
    training = ", ".join(f"{name} {duration(arm['training']['seconds'])}" for name, arm in ab["arms"].items())
    with figures.style():
        plot = as_plot("ab", figure(ab), alt="Each model's score on each benchmark with its 95% interval.",
                       caption="Scores with 95% bootstrap intervals over items; the untouched base model in grey. "
                       "Overlapping intervals do not settle a comparison: the sentences above test the paired "
                       "differences item by item.")
    return (
        f"{title_html}\n<p>Base model <code>{e(ab['base']['name'])}</code>, LoRA fine-tuned on each arm by one "
        f"recipe: <code>{e(recipe)}</code>{e(precision)}. Training took {e(training)}.</p>\n"
        f'<table class="phases"><tr>{head}</tr>{rows}</table>\n'
        '<p class="muted">Accuracy in %, held-out NLL per answer token (lower is better); 95% bootstrap '
        "intervals over items in brackets.</p>\n"
        f"<ul>{sentences}</ul>\n{figure_html(plot)}",
        [plot],
    )


def _score(item: ItemScores) -> dict[str, Any]:
    values = np.asarray(item.values, dtype=float)
    low, high = stats.interval(values)
    return {"score": float(values.mean()), "ci_low": low, "ci_high": high, "n": len(values), "kind": item.kind}


def _cell(cell: Mapping[str, Any]) -> str:
    if cell["kind"] == "accuracy":
        return f"{100 * cell['score']:.1f} ({100 * cell['ci_low']:.1f}-{100 * cell['ci_high']:.1f})"
    return f"{cell['score']:.3f} ({cell['ci_low']:.3f}-{cell['ci_high']:.3f})"


def _model_label(model: str, summary: Mapping[str, Any]) -> str:
    arm = summary["arms"].get(model)
    return f"{model} ({arm['records']} records)" if arm else f"{model} (untouched)"
