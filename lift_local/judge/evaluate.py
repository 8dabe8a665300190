"""`lift-local judge-eval`: which open judge agrees best with a reference judge (e.g. GPT-4)?

Each judge scores the reference's records through the quality phase itself (its prompts, reply cache and
resume), and every score it yields is ranked against the reference with compare-judges' statistics: the
judge's written total, its expected total where asked for, and the final quality (judge and length
combined). Two baselines on the same records bound the table: a random judge (the floor) and the length
score alone (which a judge has to beat to be worth its time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..figures import BLUE, GREY, MARK, ORANGE, new_figure
from ..records import Record
from .agreement import Agreement, ScoreTable, compare
from .protocol import Score, Verdict, length_score, record_length

# What the literature reports, drawn on the figure for scale: open 7-8B judges against GPT-4 (Prometheus 2,
# Pearson) and GPT-4 against itself, sample to sample (Spearman).
LANDMARKS = {"open 7-8B judges vs GPT-4 (Prometheus 2)": 0.65, "GPT-4 vs itself": 0.8}


@dataclasses.dataclass(frozen=True)
class Row:
    """One score compared with the reference."""

    name: str
    table: ScoreTable
    agreement: Agreement
    failures: int = 0  # records the judge gave no valid reply for
    seconds_per_100: float | None = None  # None for a baseline, or a judge answered from the cache alone

    @property
    def distinct(self) -> int:
        """Distinct scores: the fewer, the more ties the selection has to break some other way."""
        return len(set(self.table.totals.values()))


def reference_table(path: str, records: Sequence[Record], field: str, scale: float) -> ScoreTable:
    """The reference scores, `field` of each record on 0..`scale`, put on 0-100."""
    totals = {}
    for record in records:
        if field not in record.extra:
            fields = ", ".join(sorted(record.extra)) or "none besides instruction, input and output"
            raise InputError(path, f"record {record.id}", f"no field '{field}' (--reference-field); its fields: {fields}")
        value = record.extra[field]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(path, f"record {record.id}", f"'{field}' must be a number, got {value!r}")
        if not 0 <= value <= scale:
            raise InputError(path, f"record {record.id}", f"'{field}' is {value}, outside 0-{scale:g} (--reference-scale)")
        totals[record.id] = 100 * value / scale
    return ScoreTable(path, f"'{field}' on 0-{scale:g}", totals, {}, frozenset())


def judge_tables(name: str, scored: Sequence[Record]) -> list[tuple[str, ScoreTable]]:
    """The scores a quality run yields: the written total, the expected total where there is one, and the
    final quality; records without a valid verdict are unscored."""
    verdicts = [(record, Verdict.of(record)) for record in scored]
    judged = [(record, verdict) for record, verdict in verdicts if verdict.ok]
    unscored = frozenset(record.id for record, verdict in verdicts if not verdict.ok)
    columns = {f"{name}: written total": {r.id: v.total for r, v in judged}}
    if any(v.expected_total is not None for _, v in judged):
        columns[f"{name}: expected total"] = {r.id: v.expected_total for r, v in judged}
    columns[f"{name}: final quality"] = {r.id: Score.of(r).quality for r, _ in judged}
    return [(label, ScoreTable(label, label, totals, {}, unscored)) for label, totals in columns.items()]


def baseline_tables(records: Sequence[Record], percentile: float, seed: int) -> list[tuple[str, ScoreTable]]:
    """A random judge (uniform on 0-100) and the length score alone, on the same records."""
    lengths = [record_length(r) for r in records]
    threshold = float(np.percentile(lengths, percentile))
    draws = np.random.default_rng(seed).uniform(0, 100, len(records))
    columns = {
        "baseline: random judge": {r.id: float(x) for r, x in zip(records, draws, strict=True)},
        "baseline: length score alone": {r.id: length_score(n, threshold) for r, n in zip(records, lengths, strict=True)},
    }
    return [(label, ScoreTable(label, label, totals, {}, frozenset())) for label, totals in columns.items()]


def row(name: str, table: ScoreTable, reference: ScoreTable, top: int | float, **facts) -> Row:
    return Row(name, table, compare(table, reference, top=top, bins=10).overall, **facts)


def ranked(rows: Sequence[Row]) -> list[Row]:
    """Best Spearman first; a statistic undefined for the data (constant scores) ranks last."""
    return sorted(rows, key=lambda r: -np.inf if r.agreement.spearman is None else r.agreement.spearman, reverse=True)


def format_table(rows: Sequence[Row], reference: ScoreTable) -> str:
    lines = [
        f"agreement with {reference.source} ({reference.description}), best Spearman first",
        f"{'score':<52} {'n':>4} {'Pearson':>8} {'Spearman':>9} {'Kendall':>8} {'top half':>9} {'distinct':>9} "
        f"{'failed':>7} {'s/100':>7}",
    ]
    for r in rows:
        a = r.agreement
        seconds = "" if r.seconds_per_100 is None else f"{r.seconds_per_100:.0f}"
        lines.append(
            f"{r.name:<52} {a.n:>4} {_cell(a.pearson, 8)} {_cell(a.spearman, 9)} {_cell(a.kendall, 8)} "
            f"{_cell(a.top_overlap, 9)} {r.distinct:>9} {r.failures:>7} {seconds:>7}"
        )
    chance = rows[0].agreement.chance_overlap if rows else 0.0
    lines.append(f"(top half: share of the reference's top-k each score also puts in its top-k; chance {chance:.2f})")
    return "\n".join(lines)


def _cell(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.2f}"


def figure(rows: Sequence[Row], reference: ScoreTable) -> Figure:
    """Every score's correlations with the reference as bars, baselines in grey, the literature's marks."""

    fig, (ax,) = new_figure(9, 0.45 * len(rows) + 1.6)
    y = np.arange(len(rows))
    spearman = [r.agreement.spearman or 0.0 for r in rows]
    colours = [GREY if r.name.startswith("baseline") else BLUE for r in rows]
    ax.barh(y, spearman, color=colours)
    ax.barh([], [], color=BLUE, label="Spearman (baselines grey)")
    ax.plot([r.agreement.pearson or 0.0 for r in rows], y, "o", color=ORANGE, label="Pearson")
    ax.plot([r.agreement.kendall or 0.0 for r in rows], y, "|", color="black", markersize=12, label="Kendall")
    for (label, value), style in zip(LANDMARKS.items(), (":", "--"), strict=True):
        ax.axvline(value, color=MARK, linestyle=style, label=label)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [r.name for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(min(-0.2, min(spearman) - 0.05), 1)
    ax.set_xlabel(f"correlation with {reference.description} ({rows[0].agreement.n if rows else 0} records)")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return fig
