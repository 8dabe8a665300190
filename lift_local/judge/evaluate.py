"""`lift-local judge-eval`: which open judge agrees best with a reference judge (e.g. GPT-4)?

Each judge scores the reference's records through the quality phase itself (its prompts, reply cache and
resume), and every score it yields is ranked against the reference with compare-judges' statistics: the
judge's written total, its expected total where asked for, and the final quality (judge and length
combined); several judges are also ranked as a jury, and a fitted scorer as one more row. Two baselines on
the same records bound the table: a random judge (the floor) and the length score alone (which a judge has
to beat to be worth its time). Every correlation comes with its 95% bootstrap interval: where two rows'
intervals overlap, the records do not decide which of the two agrees better.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..figures import BLUE, GREY, MARK, ORANGE, interval_bars, new_figure
from ..records import Record
from .agreement import Agreement, ScoreTable, compare, correlation_cell
from .protocol import Score, Verdict, jury_totals, length_score, record_length

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
    """The scores a quality run yields, in this order: the written total, the expected total where there is
    one, and the final quality (so the next-to-last is what the judge ranks by); records without a valid
    verdict are unscored."""
    verdicts = [(record, Verdict.of(record)) for record in scored]
    judged = [(record, verdict) for record, verdict in verdicts if verdict.ok]
    unscored = frozenset(record.id for record, verdict in verdicts if not verdict.ok)
    columns = {f"{name}: written total": {r.id: v.total for r, v in judged}}
    if any(v.expected_total is not None for _, v in judged):
        columns[f"{name}: expected total"] = {r.id: v.expected_total for r, v in judged}
    columns[f"{name}: final quality"] = {r.id: Score.of(r).quality for r, _ in judged}
    return [(label, ScoreTable(label, label, totals, {}, unscored)) for label, totals in columns.items()]


def scorer_table(name: str, scored: Sequence[Record]) -> tuple[str, ScoreTable]:
    """A fitted scorer's scores, from the quality phase's records ranked by it; those it could not score
    (a judge gave no valid verdict) are unscored."""
    label = f"scorer {name}: fitted score"
    scores = {record.id: Score.of(record).judge_score for record in scored if Score.of(record) is not None}
    unscored = frozenset(record.id for record in scored if Score.of(record) is None)
    return label, ScoreTable(label, label, scores, {}, unscored)


def jury_table(names: Sequence[str], tables: Sequence[ScoreTable]) -> tuple[str, ScoreTable]:
    """A jury of the judges whose ranking totals (expected, else written) are `tables`, on the records every
    one of them scored, as the quality phase ranks it (`jury_totals`)."""
    ids = sorted(set.intersection(*(set(table.totals) for table in tables)))
    totals = jury_totals(np.array([[table.totals[i] for table in tables] for i in ids], dtype=float))
    label = f"jury ({' + '.join(names)}): total"
    unscored = frozenset().union(*(table.unscored for table in tables))
    return label, ScoreTable(label, label, dict(zip(ids, map(float, totals))), {}, unscored)


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
    width = max([len(r.name) for r in rows] + [5])
    lines = [
        f"agreement with {reference.source} ({reference.description}), best Spearman first; correlations with "
        "their 95% bootstrap interval",
        f"{'score':<{width}} {'n':>4} {'Spearman':>19} {'Pearson':>19} {'Kendall':>19} {'top half':>9} "
        f"{'distinct':>9} {'failed':>7} {'s/100':>7}",
    ]
    for r in rows:
        a = r.agreement
        seconds = "" if r.seconds_per_100 is None else f"{r.seconds_per_100:.0f}"
        correlations = " ".join(correlation_cell(a, statistic, 19) for statistic in ("spearman", "pearson", "kendall"))
        lines.append(
            f"{r.name:<{width}} {a.n:>4} {correlations} {_cell(a.top_overlap, 9)} {r.distinct:>9} {r.failures:>7} "
            f"{seconds:>7}"
        )
    chance = rows[0].agreement.chance_overlap if rows else 0.0
    lines.append(f"(top half: share of the reference's top-k each score also puts in its top-k; chance {chance:.2f})")
    lines += [f"undecided: {' and '.join(names)}: their Spearman intervals overlap, so these records do not decide "
              "which agrees better" for names in undecided(rows)]
    return "\n".join(lines)


def undecided(rows: Sequence[Row]) -> list[tuple[str, str]]:
    """Neighbours in the ranking (best Spearman first) whose Spearman intervals overlap: their order is not
    decided by the data."""
    pairs = []
    for upper, lower in zip(rows, rows[1:]):
        a, b = upper.agreement.intervals.get("spearman"), lower.agreement.intervals.get("spearman")
        if a and b and a[0] <= b[1] and b[0] <= a[1]:
            pairs.append((upper.name, lower.name))
    return pairs


def _cell(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.2f}"


def figure(rows: Sequence[Row], reference: ScoreTable) -> Figure:
    """Every score's correlations with the reference as bars, baselines in grey, the literature's marks."""

    fig, (ax,) = new_figure(9, 0.45 * len(rows) + 1.6)
    y = np.arange(len(rows))
    spearman = [r.agreement.spearman or 0.0 for r in rows]
    colours = [GREY if r.name.startswith("baseline") else BLUE for r in rows]
    low, high = zip(*(r.agreement.intervals.get("spearman", (s, s)) for r, s in zip(rows, spearman))) if rows else ((), ())
    interval_bars(ax, [r.name for r in rows], spearman, list(low), list(high), colours)
    ax.barh([], [], color=BLUE, label="Spearman, 95% interval (baselines grey)")
    ax.plot([r.agreement.pearson or 0.0 for r in rows], y, "o", color=ORANGE, label="Pearson")
    ax.plot([r.agreement.kendall or 0.0 for r in rows], y, "|", color="black", markersize=12, label="Kendall")
    for (label, value), style in zip(LANDMARKS.items(), (":", "--"), strict=True):
        ax.axvline(value, color=MARK, linestyle=style, label=label)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(min([-0.2, *(value - 0.05 for value in low)]), 1)
    ax.set_xlabel(f"correlation with {reference.description} ({rows[0].agreement.n if rows else 0} records)")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    return fig
