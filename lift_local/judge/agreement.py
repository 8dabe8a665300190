"""Does an open judge agree with another judge (typically GPT-4) on the same records?

LIFT's quality phase keeps the records a judge scores highest, so what matters is whether two judges rank
records alike and would keep the same ones: correlations, mean absolute difference, quadratic-weighted kappa
on binned scores and the overlap of their top-k selections, for the total and for each rubric dimension
both judges report.

Score files hold one judge's scores: lift-local's own output (records with `lift.judge`), JSONL or a JSON
array of objects with `id` and `score`, CSV/TSV with an `id,score` header, or the LIFT reference scripts'
`index<TAB>score` lines, whose index is a record's position in the records file that was scored.
Every score is put on 0-100 when it is read, so the math below never sees a file's own scale.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from ..errors import InputError, NothingToCompare
from ..records import META_KEY, Record, parse_json_items, read_text
from ..stats import paired_interval
from .protocol import DIMENSIONS, Score, Verdict, check_top, selection_size

# Which lift-local score is compared: the judge's written total, its expected total, or the final quality.
FIELDS = {"total": "judge total", "expected": "expected judge total", "quality": "final quality"}

_INDEX_LINE = re.compile(r"\s*\d+\t")
RESAMPLES = 2_000  # bootstrap resamples of a correlation's interval: its ends move by about 0.01 between seeds


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x, y = x - x.mean(axis=axis, keepdims=True), y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of equal scores has none: NaN
        return (x * y).sum(axis=axis) / np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


def _kendall(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b, over `axis` (a bootstrap asks for 2,000 resamples, BCa's jackknife for n more)."""
    x, y = np.moveaxis(np.asarray(x, dtype=float), axis, -1), np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    n = x.shape[-1]
    taus = np.array([_tau_b(a, b) for a, b in zip(x.reshape(-1, n), y.reshape(-1, n), strict=True)])
    result = taus.reshape(x.shape[:-1])
    return result[()] if result.ndim == 0 else result


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """`scipy.stats.kendalltau(x, y).statistic`, computed as scipy does, without what it adds around the tau
    (its p-value, argument checks): ~20 us instead of ~450 us for 100 records."""
    if _kendall_dis is None or len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return float(stats.kendalltau(x, y).statistic)
    size = x.size
    perm = np.argsort(y)  # sort on y and convert y to dense ranks
    x, y = x[perm], y[perm]
    y = np.r_[True, y[1:] != y[:-1]].cumsum(dtype=np.intp)
    perm = np.argsort(x, kind="mergesort")  # stable sort on x and convert x to dense ranks
    x, y = x[perm], y[perm]
    x = np.r_[True, x[1:] != x[:-1]].cumsum(dtype=np.intp)
    dis = _kendall_dis(x, y)  # discordant pairs
    obs = np.r_[True, (x[1:] != x[:-1]) | (y[1:] != y[:-1]), True]
    cnt = np.diff(np.nonzero(obs)[0]).astype("int64", copy=False)
    ntie = int((cnt * (cnt - 1) // 2).sum())  # joint ties
    xtie, ytie = _ties(x), _ties(y)
    tot = (size * (size - 1)) // 2
    if xtie == tot or ytie == tot:
        return float("nan")
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    tau = con_minus_dis / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    return float(np.minimum(1.0, max(-1.0, tau)))


def _ties(ranks: np.ndarray) -> int:
    cnt = np.bincount(ranks).astype("int64", copy=False)
    cnt = cnt[cnt > 1]
    return int((cnt * (cnt - 1) // 2).sum())


try:  # scipy's own count of discordant pairs (compiled), which kendalltau uses; if it moves, kendalltau serves
    from scipy.stats._stats import _kendall_dis
except ImportError:  # pragma: no cover
    _kendall_dis = None


# The correlations reported, as statistics of paired resamples (Pearson and Spearman vectorised over them).
CORRELATIONS = {"pearson": _pearson, "spearman": _spearman, "kendall": _kendall}


@dataclasses.dataclass(frozen=True)
class ScoreTable:
    """One judge's scores on 0-100, by record id.

    `dimensions` maps a rubric dimension to its scores (also on 0-100); `unscored` holds the ids that are
    in the file without a score (a failed judge reply, an empty cell).
    """

    source: str
    description: str  # how the file was read, e.g. "CSV, scores on 0-10 (auto-detected)"
    totals: dict[str, float]
    dimensions: dict[str, dict[str, float]]
    unscored: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How two judges agree on one score. A statistic that is undefined for the data is None, and a note
    says why."""

    n: int
    mean_a: float
    mean_b: float
    pearson: float | None
    spearman: float | None
    kendall: float | None
    mad: float  # mean absolute difference, on 0-100
    kappa: float | None  # quadratic-weighted, on the binned scores
    top_k: int
    top_overlap: float | None  # |top-k of A ∩ top-k of B| / k
    notes: tuple[str, ...]
    # The 95% bootstrap interval of each correlation over the matched records (`stats.paired_interval`).
    intervals: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def interval(self, statistic: str) -> str:
        """"[low, high]" of a correlation's interval, or "" where it has none."""
        low, high = self.intervals.get(statistic, (math.nan, math.nan))
        return "" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"

    @property
    def chance_overlap(self) -> float:
        """The expected top-k overlap of two selections made at random."""
        return self.top_k / self.n


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`matched` records are scored by both judges; `only_a` are scored by A and absent from B's file
    (likewise `only_b`); `unscored_a` are in A's file without a score."""

    matched: int
    only_a: int
    only_b: int
    unscored_a: int
    unscored_b: int
    bins: int
    overall: Agreement
    dimensions: dict[str, Agreement]


# --- reading score files ---


def load_scores(
    path: Path | str,
    records: Sequence[Record] | None = None,
    *,
    field: str = "total",
    scale: float | None = None,
) -> ScoreTable:
    """Read one judge's scores from any supported format.

    `records` is the records file an `index<TAB>score` file is keyed to. `field` picks lift-local's judge
    total or final quality. `scale` is the maximum of an external file's score scale; None means auto:
    100 if any score exceeds 10, else 10. Rubric dimensions are always on the rubric's own maxima.
    """
    if field not in FIELDS:
        raise ValueError(f"field must be one of {', '.join(FIELDS)}, got {field!r}")
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    path = Path(path)
    raw = read_text(path)  # read as records files are, with the same errors
    first_line = raw.lstrip().partition("\n")[0]
    if first_line.startswith(("[", "{")):
        rows = _json_rows(path, parse_json_items(path, raw), field)
        kind = "JSON" if first_line.startswith("[") else "JSONL"
    elif _INDEX_LINE.match(first_line):
        rows, kind = _index_rows(path, raw, records), "index text"
    else:
        delimiter = "\t" if "\t" in first_line else ","
        rows, kind = _table_rows(path, raw, delimiter), "TSV" if delimiter == "\t" else "CSV"
    what = FIELDS[field]
    return _build_table(path, kind, f"lift-local {what}", list(rows), scale)


@dataclasses.dataclass(frozen=True)
class _Row:
    where: str  # "line 3", for messages
    id: str
    total: Any  # as found in the file; None or "" when unscored
    dimensions: dict[str, Any]
    lift_local: bool  # lift-local's own output: the total is on 0-100 whatever `scale` says


def _json_rows(path: Path, items: Iterator[tuple[str, Any]], field: str) -> Iterator[_Row]:
    for where, item in items:
        if not isinstance(item, dict):
            raise InputError(path, where, "expected a JSON object with 'id' and 'score'")
        record_id = _id(path, where, item.get("id"))
        meta = item.get(META_KEY)
        if isinstance(meta, dict):
            yield _lift_local_row(path, where, record_id, meta, field)
        elif "score" in item:
            yield _Row(where, record_id, item["score"], _rubric_fields(item), lift_local=False)
        else:
            raise InputError(path, where, "has no 'score' field (nor lift-local's judge scores)")


def _lift_local_row(path: Path, where: str, record_id: str, meta: dict, field: str) -> _Row:
    verdicts = Verdict.all(Record("-", "", "", record_id, meta))
    if not verdicts or not all(verdict.ok for verdict in verdicts):
        return _Row(where, record_id, None, {}, lift_local=True)
    score = Score.from_meta(meta)
    if len(verdicts) > 1:  # a jury: its total is the one score it has, besides the final quality
        jury = score and score.judge_score
        return _Row(where, record_id, {"quality": score and score.quality}.get(field, jury), {}, lift_local=True)
    verdict = verdicts[0]
    total = {"total": verdict.total, "expected": verdict.expected_total, "quality": score and score.quality}[field]
    if total is None:
        hint = {"total": "", "expected": " (was it judged with --expected?)"}.get(
            field, " (was the file written by the quality phase?)")
        raise InputError(path, where, f"the judge's status is ok but it has no {field} score{hint}")
    dimensions = _rubric_fields(verdict.scores) if isinstance(verdict.scores, dict) else {}
    return _Row(where, record_id, total, dimensions, lift_local=True)


def _index_rows(path: Path, raw: str, records: Sequence[Record] | None) -> Iterator[_Row]:
    if records is None:
        raise InputError(path, None, "holds index<TAB>score lines: give the records they index (--records)")
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise InputError(path, where, f"expected index<TAB>score, got {line[:60]!r}")
        index = int(parts[0])
        if index >= len(records):
            raise InputError(path, where, f"index {index} is past the end of the {len(records)} records")
        yield _Row(where, records[index].id, parts[1].strip(), {}, lift_local=False)


def _table_rows(path: Path, raw: str, delimiter: str) -> Iterator[_Row]:
    reader = csv.DictReader(raw.splitlines(), delimiter=delimiter)
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    if "id" not in columns or "score" not in columns:
        raise InputError(
            path,
            "line 1",
            "not a score file: expected lift-local JSONL, JSONL with 'id' and 'score', a CSV/TSV with an "
            "id,score header, or index<TAB>score lines",
        )
    for row in reader:
        where = f"line {reader.line_num}"
        if None in row or None in row.values():
            raise InputError(path, where, f"has {'more' if None in row else 'fewer'} cells than the header")
        cells = {name: row[original] for name, original in columns.items()}
        record_id = _id(path, where, cells["id"])
        yield _Row(where, record_id, cells["score"], _rubric_fields(cells), lift_local=False)


def _id(path: Path, where: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise InputError(path, where, "needs a non-empty 'id' (string or integer)")
    return str(value).strip()


def _rubric_fields(item: dict[str, Any]) -> dict[str, Any]:
    """The rubric dimensions among a row's fields; other fields (comments, models, ...) are not scores."""
    return {key.lower(): value for key, value in item.items() if key.lower() in DIMENSIONS}


def _build_table(path: Path, kind: str, lift_local: str, rows: list[_Row], scale: float | None) -> ScoreTable:
    seen: dict[str, str] = {}
    totals: dict[str, float] = {}
    raw_totals: list[tuple[_Row, float]] = []
    dimensions: dict[str, dict[str, float]] = {}
    unscored = set()
    for row in rows:
        if row.id in seen:
            raise InputError(path, row.where, f"id {row.id!r} appears twice (also at {seen[row.id]})")
        seen[row.id] = row.where
        value = _number(path, row.where, "score", row.total)
        if value is None:
            unscored.add(row.id)
            continue
        raw_totals.append((row, value))
        for name, cell in row.dimensions.items():
            score = _number(path, row.where, name, cell)
            if score is not None:
                on_100 = _on_100(path, row.where, name, score, DIMENSIONS[name])
                dimensions.setdefault(name, {})[row.id] = on_100
    if not raw_totals:
        raise InputError(path, None, f"no record has a score ({len(unscored)} without one)")
    external = [value for row, value in raw_totals if not row.lift_local]
    if not external:
        if scale is not None:
            raise InputError(path, None, "holds lift-local's scores, always 0-100: no scale applies")
        description = f"{kind}, {lift_local}"
    elif scale is None:
        scale = 100.0 if max(external) > 10 else 10.0
        description = f"{kind}, scores on 0-{scale:g} (auto-detected)"
    else:
        description = f"{kind}, scores on 0-{scale:g}"
    for row, value in raw_totals:
        totals[row.id] = _on_100(path, row.where, "score", value, 100.0 if row.lift_local else scale)
    return ScoreTable(str(path), description, totals, dimensions, frozenset(unscored))


def _number(path: Path, where: str, name: str, value: Any) -> float | None:
    """A score as a float; None when the score is missing (null or an empty cell)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(path, where, f"{name} must be a number, got a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(path, where, f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise InputError(path, where, f"{name} must be a finite number, got {value!r}")
    return number


def _on_100(path: Path, where: str, name: str, value: float, maximum: float) -> float:
    if not 0 <= value <= maximum:
        raise InputError(path, where, f"{name} {value:g} is outside its scale 0-{maximum:g}")
    return 100.0 * value / maximum


# --- the comparison ---


def compare(a: ScoreTable, b: ScoreTable, *, top: int | float, bins: int) -> Comparison:
    """Agreement of two judges on the records both scored.

    `top` is the size of the selections compared, as the quality phase's `top`: a count, or a fraction of
    the matched records. Ties at the cut are broken by id, the same way for both judges. `bins` equal bins
    of 0-100 give the categories of the weighted kappa.
    """
    try:
        check_top(top)  # as the quality phase checks it
    except ValueError as err:
        raise ValueError(f"top {err}") from None
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    ids_a, ids_b = set(a.totals), set(b.totals)
    matched = ids_a & ids_b
    if not matched:
        raise NothingToCompare(
            f"{a.source} and {b.source} have no scored record in common: do they score the same records? "
            f"(A's ids look like {_example(ids_a)}, B's like {_example(ids_b)})"
        )
    shared = [d for d in DIMENSIONS if a.dimensions.get(d, {}).keys() & b.dimensions.get(d, {}).keys()]
    return Comparison(
        matched=len(matched),
        only_a=len(ids_a - ids_b - b.unscored),
        only_b=len(ids_b - ids_a - a.unscored),
        unscored_a=len(a.unscored),
        unscored_b=len(b.unscored),
        bins=bins,
        overall=_agreement(a.totals, b.totals, top, bins),
        dimensions={d: _agreement(a.dimensions[d], b.dimensions[d], top, bins) for d in shared},
    )


def _example(ids: set[str]) -> str:
    return repr(min(ids)) if ids else "(none)"


def _paired(a: dict[str, float], b: dict[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ids both sides scored, in id order, with each side's scores."""
    ids = sorted(a.keys() & b.keys())
    return ids, np.array([a[i] for i in ids]), np.array([b[i] for i in ids])


def _agreement(a: dict[str, float], b: dict[str, float], top: int | float, bins: int) -> Agreement:
    from sklearn.metrics import cohen_kappa_score, mean_absolute_error  # ~0.4 s to import: only when used

    ids, x, y = _paired(a, b)
    n = len(ids)
    notes = []
    pearson = spearman = kendall = None
    if n < 2:
        notes.append("correlations n/a: fewer than 2 matched records")
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        constant = " and ".join(side for side, v in (("A", x), ("B", y)) if np.ptp(v) == 0)
        notes.append(f"correlations n/a: {constant} gave every record the same score")
    else:
        pearson = float(stats.pearsonr(x, y).statistic)
        spearman = float(stats.spearmanr(x, y).statistic)
        kendall = float(stats.kendalltau(x, y).statistic)
    intervals = {}
    if pearson is not None and n >= 3:
        intervals = {name: paired_interval(statistic, x, y, resamples=RESAMPLES)
                     for name, statistic in CORRELATIONS.items()}
    bins_x, bins_y = _binned(x, bins), _binned(y, bins)
    kappa = None
    if len(np.unique(np.concatenate([bins_x, bins_y]))) == 1:
        notes.append("kappa n/a: every score of both judges falls in the same bin")
    else:
        kappa = float(cohen_kappa_score(bins_x, bins_y, weights="quadratic", labels=np.arange(bins)))
    k = selection_size(top, n)
    overlap = None
    if k >= n:
        notes.append(f"top-k overlap n/a: k={k} selects all {n} matched records")
    else:
        top_x, cut_x = _top_k(ids, x, k)
        top_y, cut_y = _top_k(ids, y, k)
        overlap = len(top_x & top_y) / k
        for side, scores, cut in (("A", x, cut_x), ("B", y, cut_y)):
            if k < np.sum(scores >= cut):
                tied = np.sum(scores == cut)
                notes.append(f"top-{k}: {tied} records tie at {side}'s cut score {cut:.4g}; broken by id")
    return Agreement(
        n=n,
        mean_a=float(np.mean(x)),
        mean_b=float(np.mean(y)),
        pearson=pearson,
        spearman=spearman,
        kendall=kendall,
        mad=float(mean_absolute_error(x, y)),
        kappa=kappa,
        top_k=min(k, n),
        top_overlap=overlap,
        notes=tuple(notes),
        intervals=intervals,
    )


def _bin_edges(bins: int) -> np.ndarray:
    return np.linspace(0, 100, bins + 1)


def _binned(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin index of each 0-100 score in `bins` equal bins; 100 belongs to the last bin."""
    return np.digitize(scores, _bin_edges(bins)[1:-1])


def _top_k(ids: list[str], scores: np.ndarray, k: int) -> tuple[set[str], float]:
    """The k best ids (highest score first, then lowest id) and the k-th best score."""
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return {ids[i] for i in order}, float(scores[order[-1]])


def format_report(a: ScoreTable, b: ScoreTable, comparison: Comparison) -> str:
    """The comparison as a compact table, with what each file was read as and why a value is n/a."""
    c = comparison
    lines = [
        f"A: {a.source}  [{a.description}]",
        f"B: {b.source}  [{b.description}]",
        f"records: {c.matched} matched, {c.only_a} only in A, {c.only_b} only in B, "
        f"unscored {c.unscored_a} in A and {c.unscored_b} in B",
        "",
        f"{'score':<12}{'n':>6}{'mean A':>8}{'mean B':>8}{'pearson':>20}{'spearman':>20}"
        f"{'kendall':>20}{'MAD':>7}{'kappa':>7}{'k':>7}{'top-k':>7}{'chance':>8}",
    ]
    rows = {"total": c.overall, **c.dimensions}
    for name, g in rows.items():
        correlations = "".join(correlation_cell(g, statistic, 20) for statistic in CORRELATIONS)
        lines.append(
            f"{name:<12}{g.n:>6}{g.mean_a:>8.1f}{g.mean_b:>8.1f}{correlations}{g.mad:>7.1f}{_cell(g.kappa, 7)}"
            f"{g.top_k:>7}{_cell(g.top_overlap, 7)}{g.chance_overlap:>8.2f}"
        )
    notes = [f"  {name}: {note}" for name, g in rows.items() for note in g.notes]
    lines += ["", "notes:", *notes] if notes else []
    lines += [
        "",
        "Scores are on 0-100. Correlations with their 95% bootstrap interval over the matched records.",
        f"MAD: mean absolute difference. kappa: quadratic-weighted on {c.bins} bins.",
        "top-k: share of A's k best records also among B's k best; chance: the same for a random pick.",
    ]
    return "\n".join(lines)


def _cell(value: float | None, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.2f}"


def correlation_cell(agreement: Agreement, statistic: str, width: int) -> str:
    """"0.38 [0.16, 0.57]": a correlation and its interval, right-aligned in `width`."""
    value = getattr(agreement, statistic)
    return f"{'n/a' if value is None else f'{value:.2f} {agreement.interval(statistic)}'.strip():>{width}}"


# --- the figure ---


def figure(a: ScoreTable, b: ScoreTable, comparison: Comparison) -> Figure:
    """One row per compared score: both judges' distributions side by side, and how their bins pair up."""
    labels = (f"A: {Path(a.source).name}", f"B: {Path(b.source).name}")
    rows = [("total", a.totals, b.totals)] + [
        (name, a.dimensions[name], b.dimensions[name]) for name in comparison.dimensions
    ]
    fig = Figure(figsize=(10, 3.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    edges = _bin_edges(comparison.bins)
    agreements = {"total": comparison.overall, **comparison.dimensions}
    for (name, scores_a, scores_b), (hist, joint) in zip(rows, axes, strict=True):
        _, x, y = _paired(scores_a, scores_b)
        hist.hist([x, y], bins=edges, label=list(labels))
        hist.set(title=f"{name}: {len(x)} matched records", xlabel="score (0-100)", ylabel="records")
        hist.legend()
        spearman = agreements[name].spearman
        if spearman is not None:  # the number a reader looks for, with how sure it is
            joint.text(0.02, 0.98, f"Spearman {spearman:.2f} {agreements[name].interval('spearman')}",
                       transform=joint.transAxes, va="top", fontsize=8)
        # Counts per pair of bins (the table kappa is computed from): a scatter would hide how many records
        # share a point, as integer scores do.
        *_, image = joint.hist2d(x, y, bins=[edges, edges], cmap="Blues", cmin=1)
        fig.colorbar(image, ax=joint, label="records")
        joint.plot([0, 100], [0, 100], color="grey", linewidth=1, linestyle="--")
        joint.set(title=f"{name}: A against B", xlabel=labels[0], ylabel=labels[1], aspect="equal")
    return fig
