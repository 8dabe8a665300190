"""LIFT phase 4, quality compression: keep the N records with the best judge score and length score.

The judge is asked as `judge.protocol` says: a reply that does not parse is never a score, and a record
still without a valid reply after the retries is reported and left out of the ranking.

Judges tend to give near-uniform scores (LIFT.md, known weaknesses), which makes the selection little better
than random: the result carries every dimension's distribution, a warning when the totals are nearly
uniform, and a random subset of the same size to compare against.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import figures
from ..figures import Plot
from ..judge.protocol import (
    DIMENSIONS,
    Score,
    Verdict,
    check_top,
    count_or_fraction,
    judge_records,
    length_score,
    record_length,
    selection_size,
)
from ..manifest import PhaseEntry, RunFolder
from ..params import option
from ..records import Record
from . import GenerationParams, Kit, Mapped, Outcome, Phase, Selection

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Totals are "nearly uniform" when their standard deviation is below UNIFORM_STD points (of 100), or when
# one total is shared by more than UNIFORM_SHARE of the scored records.
UNIFORM_STD = 3.0
UNIFORM_SHARE = 0.5
_BARS = " ▁▂▃▄▅▆▇█"


@dataclasses.dataclass(frozen=True)
class QualityParams(GenerationParams):
    top: int | float = option(
        10_000, "How many records to keep: a number (10000) or a fraction of IN (0.5).", flags=("-n",),
        metavar="N|FRACTION", parse=count_or_fraction, check=check_top,
    )  # the paper: 10k for code, 15k for NLU
    retries: int = option(
        2, "Extra requests for a record whose judge reply is not valid; each retry uses another seed.", low=0
    )
    judge_weight: float = option(0.9, "Weight of the judge's total (0-100) in the final quality.", low=0)
    length_weight: float = option(0.1, "Weight of the length score (0-100) in the final quality.", low=0)
    length_percentile: float = option(
        98.0, "Records at least as long as this percentile of IN's lengths get the full length score.",
        low=0, low_open=True, high=100,
    )  # T
    # First request greedy, so the judge's most likely scores; a retry must be able to differ from the
    # failed reply; the JSON of four integers needs about 30 tokens.
    temperature: float = option(0.0, "Sampling temperature of the first request.", low=0, high=2)
    retry_temperature: float = option(
        0.7, "Sampling temperature of the retries (above 0, or a retry repeats the failed reply).", low=0, high=2
    )
    max_tokens: int = option(96, "Longest judge reply in tokens; a reply cut off there is not a score.", low=1)
    expected: bool = option(
        True, "Rank by expected scores: the judge scores each dimension 0-9 (the judge_digits prompt), and a "
        "dimension's score is the probability-weighted mean of the ten digits, which breaks the ties of "
        "integer scores and agrees better with GPT-4 (docs/judges.md). --no-expected: the paper's integer "
        "rubric (the judge prompt), ranked by the values written.",
    )

    def count(self, records: int) -> int:
        """N for a data set of `records` records."""
        return selection_size(self.top, records)


@dataclasses.dataclass(frozen=True)
class Judged:
    """What `select` needs of a judged record."""

    status: str
    scores: dict[str, float] | None
    total: float | None  # what the selection ranks by
    length: int
    sampled_total: float | None  # the total of the values written, for counting the ties expected scores break
    fallback: int = 0  # dimensions whose expected score fell back to the value written
    missing_values: int = 0


@dataclasses.dataclass(frozen=True)
class Summary:
    """The distribution of one score over the judged records."""

    name: str
    maximum: float
    count: int
    mean: float | None  # None when nothing was scored
    std: float | None
    min: float | None
    max: float | None
    histogram: list[int]  # counts in 10 equal bins over [0, maximum]

    @classmethod
    def of(cls, name: str, maximum: float, values: list[float]) -> Summary:
        v = np.asarray(values, dtype=float)
        counts = np.histogram(v, bins=10, range=(0, maximum))[0].tolist()
        if not len(v):
            return cls(name, maximum, 0, None, None, None, None, counts)
        mean, std, low, high = (float(f(v)) for f in (np.mean, np.std, np.min, np.max))
        return cls(name, maximum, len(v), mean, std, low, high, counts)

    def line(self) -> str:
        """One line: range, mean, spread and a histogram from 0 (left) to the maximum (right)."""
        if not self.count:
            return f"{self.name:<12} 0-{self.maximum:<4g} no scores"
        peak = max(self.histogram)
        bars = "".join(_BARS[0 if c == 0 else max(1, round(8 * c / peak))] for c in self.histogram)
        return (
            f"{self.name:<12} 0-{self.maximum:<4g} mean {self.mean:5.1f}  sd {self.std:4.1f}  "
            f"min {self.min:5.1f}  max {self.max:5.1f}  |{bars}|"
        )


class Quality(
    Phase, name="quality", title="Quality compression", params=QualityParams, order=60, roles=("judge",),
    prompts={"prompt": "judge"}, requires=("instruction", "output"),  # a judge must see the answer it scores
    sides={"scores": "Also write every record with its judge verdict to this file: best first, then those the judge "
           "failed on.",
           "baseline": "Also write a random subset of IN of the same size to this file, to compare the selection with."},
):
    """LIFT phase 4: the judge scores every record of IN; the N with the best final quality go to OUT
    (JSONL), shuffled.

    The judge gives four scores in JSON: clarity 0-15, difficulty 0-25, explanation 0-25, accuracy 0-35; their
    sum is its total. By default it writes one digit 0-9 per dimension and a dimension's score is the
    probability-weighted mean of the ten digits in those points (expected scores: fewer ties, closer to GPT-4;
    docs/judges.md); --no-expected ranks by the integers written. Final quality = judge weight x total +
    length weight x length score, where the length score is 100 x L / T (at most 100), L a record's characters
    without tabs and newlines, T the length percentile of L over IN. A reply that is not valid is asked again
    (--retries); a record still without a valid reply is reported and never kept. Kept records carry
    lift.judge (scores, total, expected scores and total, raw reply, status, retries), lift.length_score and
    lift.quality.

    Prints each score's distribution, and warns when the judge's totals are nearly uniform.
    """

    def templates(self) -> dict[str, str]:
        return {"prompt": "judge_digits" if self.params.expected else "judge"}

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        verdicts = judge_records(batch, kit.chat("judge"), self.params, self.prompt(kit))
        return [
            Mapped(record.with_meta(judge=verdict.to_json()), Judged(verdict.status, verdict.expected or verdict.scores, verdict.ranking_total,
                                        record_length(record), verdict.total, len(verdict.fallback or ()),
                                        verdict.missing_values or 0))
            for record, verdict in zip(batch, verdicts, strict=True)
        ]

    def select(self, features: list[Judged]) -> Selection:
        """The top N by final quality, shuffled; the scored records best first; a random baseline."""
        params = self.params
        lengths = [f.length for f in features]
        threshold = float(np.percentile(lengths, params.length_percentile)) if features else 0.0
        meta, ranked, failures = {}, [], []
        for i, f in enumerate(features):
            if f.status != "ok":
                failures.append(i)
                continue
            score = length_score(f.length, threshold)
            meta[i] = Score(params.judge_weight * f.total + params.length_weight * score, score).to_meta()
            ranked.append(i)
        ranked.sort(key=lambda i: -meta[i]["quality"])  # stable: equal scores keep their input order

        rng = random.Random(params.seed)
        wanted = params.count(len(features))
        kept = ranked[:wanted]
        kept = rng.sample(kept, len(kept))
        baseline = rng.sample(range(len(features)), len(kept))

        totals = [features[i].total for i in ranked]
        summaries = [Summary.of(name, top, [features[i].scores[name] for i in ranked]) for name, top in DIMENSIONS.items()]
        summaries.append(Summary.of("total", 100, totals))
        best = 100 * (params.judge_weight + params.length_weight)
        summaries.append(Summary.of("quality", best, [meta[i]["quality"] for i in ranked]))
        uniform = uniformity_warnings(totals)
        warnings = list(uniform)
        sampled_totals = [features[i].sampled_total for i in ranked]
        if wanted > len(ranked):
            warnings.append(f"asked for {wanted} records but only {len(ranked)} were judged; kept all of them")
        stats = {
            "records": len(features),
            "ok": len(ranked),
            "failed": dict(Counter(features[i].status for i in failures)),
            "kept": len(kept),
            "length_T": threshold,
            "uniform_warning": bool(uniform),
            # Distinct totals of what was ranked, and of the values written: how many ties expected scores broke.
            "distinct_totals": len(set(totals)),
            "distinct_sampled_totals": len(set(sampled_totals)),
            "scores": {s.name: dataclasses.asdict(s) for s in summaries},
            "warnings": warnings,
        }
        if params.expected:
            stats["expected"] = {
                "records_with_fallback": sum(features[i].fallback > 0 for i in ranked),
                "fallback_dimensions": sum(features[i].fallback for i in ranked),
                "missing_values": sum(features[i].missing_values for i in ranked),
            }
            if stats["expected"]["fallback_dimensions"]:
                warnings.append(
                    f"{stats['expected']['records_with_fallback']} records have dimensions without readable "
                    "probabilities; they use the score the judge wrote there"
                )
        return Selection(kept, {"scores": ranked + failures, "baseline": baseline}, meta, stats)

    def summary(self, outcome: Outcome) -> list[str]:
        """Failures, every score's distribution, warnings."""
        stats = outcome.stats
        lines = [f"judged {stats['ok']} of {stats['records']} records; kept {stats['kept']}"]
        if stats["failed"]:
            counts = ", ".join(f"{n} {status}" for status, n in Counter(stats["failed"]).most_common())
            lines.append(f"no valid judge reply after retries: {counts} (left out of the ranking)")
        lines += [Summary(**s).line() for s in stats["scores"].values()]
        if "expected" in stats:
            lines.append(
                f"expected scores: {stats['distinct_totals']} distinct totals where the written values gave "
                f"{stats['distinct_sampled_totals']}; {stats['expected']['fallback_dimensions']} dimensions "
                f"without readable probabilities, {stats['expected']['missing_values']} digits without one"
            )
        lines += [f"warning: {w}" for w in stats["warnings"]]
        return lines

    def why_empty(self, outcome: Outcome) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in Counter(outcome.stats["failed"]).most_common())
        return f"the judge gave no valid reply for any of {outcome.stats['records']} records ({counts})"

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        failed = stats.get("failed", {})
        return (
            f"judged {stats['ok']}, failed {sum(failed.values())}"
            + (f" ({', '.join(f'{k}={v}' for k, v in failed.items())})" if failed else "")
            + f"; length T = {stats['length_T']:.4g} characters"
        )

    @classmethod
    def warnings(cls, entry: PhaseEntry) -> list[str]:
        return _warnings(entry)

    @classmethod
    def report(cls, run: RunFolder) -> tuple[str, list[Plot]]:
        return _report(run)



def uniformity_warnings(totals: list[int]) -> list[str]:
    if len(totals) < 2:
        return []
    std = float(np.std(totals))
    value, count = Counter(totals).most_common(1)[0]
    share = count / len(totals)
    if std >= UNIFORM_STD and share <= UNIFORM_SHARE:
        return []
    return [
        f"the judge's totals are nearly uniform (sd {std:.1f} points, {share:.0%} of records share the total "
        f"{value}; warning below sd {UNIFORM_STD:g} or above {UNIFORM_SHARE:.0%}): the selection is little "
        "better than the random baseline; use a stronger judge"
    ]


# --- the report ---


def _report(run: RunFolder) -> tuple[str, list[Plot]]:
    entry = run.done("quality")
    scored = run.records("quality", "scores")
    kept_ids = {record.id for record in run.records("quality")}
    judged = [r for r in scored if _judged(r)]
    failed = [r for r in scored if not _judged(r)]
    plots = []
    if judged:
        figure = _dimensions_figure({dim: [Verdict.of(r).scores[dim] for r in judged] for dim in DIMENSIONS})
        alt = "Four histograms of the judge's scores on clarity, difficulty, explanation and accuracy."
        caption = (
            "The judge's score on each dimension, over its full range. A judge that gives everyone the same "
            "score makes quality selection no better than random; look for spread."
        )
        plots.append(figures.as_plot("judge_dimensions", figure, alt=alt, caption=caption))

        kept_quality = [Score.of(r).quality for r in judged if r.id in kept_ids]
        rest_quality = [Score.of(r).quality for r in judged if r.id not in kept_ids]
        cutoff = min(kept_quality) if kept_quality else None
        totals = [Verdict.of(r).total for r in judged]
        expected = [Verdict.of(r).expected_total for r in judged if Verdict.of(r).expected_total is not None]
        figure = _scores_figure(
            totals, expected, [Score.of(r).length_score for r in judged], kept_quality, rest_quality, cutoff
        )
        alt = "Histograms of judge total, length score and final quality, with the kept records' cut-off."
        params = entry.params_as(QualityParams)
        weights = f"{params.judge_weight:g} × judge + {params.length_weight:g} × length"
        caption = (
            f"Judge total, length score and final quality = {weights}. "
            f"The top {len(kept_ids)} by final quality are kept"
            + (f": every kept record scores at least {cutoff:.1f}." if cutoff is not None else ".")
            + " When the judge's totals bunch together, the length score decides most of the selection."
        )
        if expected:
            caption += (
                f" Expected totals (the probability-weighted scores the selection ranks by) take "
                f"{len(set(expected))} distinct values where the written totals take {len(set(totals))}: "
                f"they broke {len(set(expected)) - len(set(totals))} ties."
            )
        plots.append(figures.as_plot("scores", figure, alt=alt, caption=caption))
    ranked = sorted(judged, key=lambda r: Score.of(r).quality, reverse=True)
    examples = figures.examples_html(
        ("Kept: highest quality", "kept", ranked[:figures.EXAMPLES]),
        ("Not kept: lowest quality", "dropped", ranked[::-1][:figures.EXAMPLES]),
        facts=_quality_facts,
    )
    parts = ["<h2>Quality compression</h2>", *map(figures.figure_html, plots), examples]
    if "baseline" in entry.side:
        parts.append(
            f"<p>A random subset of the same size, to compare with: <code>{figures.e(entry.side['baseline'])}</code>.</p>"
        )
    if failed:
        counts = Counter(Verdict.of(r).status for r in failed)
        parts.append(f"<h3>Judge failures ({len(failed)}: {figures.e(figures.compact(dict(counts)))})</h3>")
        parts.append("<p>The judge's replies that gave no score, first of them:</p>")
        parts.append(
            f'<div class="examples">{figures.cards_html(failed[:figures.EXAMPLES], "dropped", _failure_facts, _raw_reply)}</div>'
        )
    return "\n".join(parts), plots


def _dimensions_figure(scores: dict[str, list[int]]) -> Figure:
    figure, axes = figures.new_figure(10, 2.6, ncols=len(scores), histogram=True)
    for ax, (dim, values) in zip(axes, scores.items(), strict=True):
        top = DIMENSIONS[dim]
        ax.hist(values, bins=np.arange(-0.5, top + 1.5), color=figures.BLUE)
        ax.set_xlim(-0.5, top + 0.5)
        ax.set_xticks(np.linspace(0, top, 6))  # up to the maximum: a judge avoiding full marks leaves a gap
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set_title(f"{dim} (0–{top})")
        ax.set_xlabel(f"mean {np.mean(values):.1f}, sd {np.std(values):.1f}")
    axes[0].set_ylabel("records")
    return figure


def _scores_figure(
    totals: list[float], expected: list[float], lengths: list[float], kept: list[float], rest: list[float],
    cutoff: float | None,
) -> Figure:
    """Judge total (and the expected total beside it, where there is one), length score, final quality."""
    figure, axes = figures.new_figure(12 if expected else 10, 2.8, ncols=4 if expected else 3, histogram=True)
    bins = np.linspace(0, 100, 41)
    histograms = [("judge total, written" if expected else "judge total", totals)]
    histograms += [("judge total, expected", expected)] if expected else []
    histograms += [("length score", lengths)]
    for ax, (title, values) in zip(axes, histograms):
        ax.hist(values, bins=bins, color=figures.BLUE)
        ax.set(title=title, xlabel="score")
    axes[0].set_ylabel("records")
    figures.selection_histogram(axes[-1], kept, rest, bins, "not kept", cutoff, "cut-off {:.1f}")
    axes[-1].set(title="final quality", xlabel="score")
    axes[-1].legend(frameon=False, loc="upper left")
    for ax in axes:
        ax.set_xlim(0, 100)
    return figure


def _quality_facts(record: Record) -> list[tuple[str, str]]:
    verdict = Verdict.of(record)
    dims = ", ".join(f"{dim[:4]} {verdict.scores[dim]:.3g}" for dim in DIMENSIONS)
    expected = [] if verdict.expected_total is None else [("expected", f"{verdict.expected_total:.1f}")]
    return [
        ("quality", f"{Score.of(record).quality:.1f}"),
        ("judge", f"{verdict.total:.3g} ({dims})"),
        *expected,
        ("length", f"{Score.of(record).length_score:.0f}"),
    ]


def _failure_facts(record: Record) -> list[tuple[str, str]]:
    verdict = Verdict.of(record)
    return [("status", verdict.status), ("retries", str(verdict.retries))]


def _raw_reply(record: Record) -> list[tuple[str, str]]:
    return [("judge reply", Verdict.of(record).raw)]


def _judged(record: Record) -> bool:
    verdict = Verdict.of(record)
    return verdict is not None and verdict.ok and Score.of(record) is not None


def _warnings(entry: PhaseEntry) -> list[str]:
    stats = entry.stats
    # The phase words its own warnings, a near-uniform judge among them; older manifests have only the flag.
    uniform = ["the judge's totals are nearly uniform"] if stats.get("uniform_warning") else []
    texts = stats.get("warnings", uniform)
    found = []
    if texts:
        found.append(f"<b>Quality compression:</b> {'; '.join(map(figures.e, texts))}.")
        if stats.get("uniform_warning") and "baseline" in entry.side:
            found[-1] += (
                " Compare the curated set with the random subset of the same size in "
                f"<code>{figures.e(entry.side['baseline'])}</code>."
            )
    failed = stats.get("failed", {})
    if sum(failed.values()):
        found.append(
            f"<b>The judge's reply could not be used for {sum(failed.values())} of "
            f"{stats.get('ok', 0) + sum(failed.values())} records</b> ({figures.e(figures.compact(failed))}). "
            "They have no score; the first of their raw replies are shown under Quality compression."
        )
    return found
