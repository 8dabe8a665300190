"""LIFT phase 4, quality compression: keep the N records with the best judge score and length score.

The judge replies in JSON constrained to one bounded integer per dimension; the total is computed here,
never taken from the judge. A reply that does not parse is never a score: the judge is asked again (with
another seed, at `retry_temperature`) up to `retries` times, and a record still without a valid reply is
reported and left out of the ranking. Each record keeps the raw reply, the parse status and the retry count.

Judges tend to give near-uniform scores (LIFT.md, known weaknesses), which makes the selection little better
than random: the result carries every dimension's distribution, a warning when the totals are nearly
uniform, and a random subset of the same size to compare against.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from typing import Any

import numpy as np

from .llm import ChatModel, Sampling
from .llm_calls import chat, check_sampling, reply_status
from .prompts import Prompt
from .records import Record

# LIFT's rubric: dimension -> maximum score; the maxima add up to 100.
DIMENSIONS = {"clarity": 15, "difficulty": 25, "explanation": 25, "accuracy": 35}
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        name: {"type": "integer", "minimum": 0, "maximum": top} for name, top in DIMENSIONS.items()
    },
    "required": list(DIMENSIONS),
    "additionalProperties": False,
}
PROMPT_FIELDS = ("instruction", "output")  # a judge prompt must show both (load_prompt's `requires`)
# Totals are "nearly uniform" when their standard deviation is below UNIFORM_STD points (of 100), or when
# one total is shared by more than UNIFORM_SHARE of the scored records.
UNIFORM_STD = 3.0
UNIFORM_SHARE = 0.5
_BARS = " ▁▂▃▄▅▆▇█"
_UNANSWERED = ("truncated", "prompt_too_long")  # reply statuses that explain a reply that does not parse


@dataclasses.dataclass(frozen=True)
class QualityParams:
    top: int | float = 10_000  # N records, or a fraction of the input (the paper: 10k for code, 15k for NLU)
    retries: int = 2  # extra judge requests for a record whose reply does not parse
    judge_weight: float = 0.9
    length_weight: float = 0.1
    length_percentile: float = 98.0  # T, the length that earns the full length score
    temperature: float = 0.0  # first request: greedy, so the judge's most likely scores
    retry_temperature: float = 0.7  # a retry must be able to differ from the failed reply
    max_tokens: int = 96  # the JSON of four integers needs about 30 tokens
    seed: int = 0

    def __post_init__(self) -> None:
        count = isinstance(self.top, int) and not isinstance(self.top, bool) and self.top >= 1
        fraction = isinstance(self.top, float) and 0 < self.top <= 1
        if not (count or fraction):
            raise ValueError(f"top must be a count of at least 1 or a fraction in (0, 1], got {self.top!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be at least 0, got {self.retries}")
        if self.judge_weight < 0 or self.length_weight < 0:
            raise ValueError("judge_weight and length_weight must not be negative")
        if not 0 < self.length_percentile <= 100:
            raise ValueError(f"length_percentile must be in (0, 100], got {self.length_percentile}")
        check_sampling(self.temperature, self.max_tokens)
        check_sampling(self.retry_temperature, self.max_tokens, name="retry_temperature")

    def count(self, records: int) -> int:
        """N for a data set of `records` records."""
        if isinstance(self.top, float):
            return max(1, round(self.top * records))
        return self.top


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


@dataclasses.dataclass
class QualityResult:
    ranked: list[Record]  # judged records, best final quality first
    kept: list[Record]  # the top N of `ranked`, shuffled
    baseline: list[Record]  # as many records drawn at random from the whole input, for comparison
    failures: list[Record]  # records without a valid judge reply after every retry
    length_threshold: float  # T: a record this long or longer gets the full length score
    summaries: list[Summary]  # each dimension, the judge total and the final quality
    warnings: list[str]

    @property
    def failure_counts(self) -> Counter[str]:
        return Counter(r.meta["judge"]["status"] for r in self.failures)

    @property
    def scored(self) -> list[Record]:
        """Every record with its verdict: the ranked ones best first, then the failures."""
        return self.ranked + self.failures

    @property
    def uniform(self) -> bool:
        return bool(uniformity_warnings([r.meta["judge"]["total"] for r in self.ranked]))

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "records": len(self.scored),
            "ok": len(self.ranked),
            "failed": dict(self.failure_counts),
            "kept": len(self.kept),
            "length_T": self.length_threshold,
            "uniform_warning": self.uniform,
            "scores": {s.name: dataclasses.asdict(s) for s in self.summaries},
            "warnings": self.warnings,
        }

    def report(self) -> list[str]:
        """The lines a command prints: failures, every score's distribution, warnings."""
        lines = [f"judged {len(self.ranked)} of {len(self.scored)} records; kept {len(self.kept)}"]
        if self.failures:
            counts = ", ".join(f"{n} {status}" for status, n in self.failure_counts.most_common())
            lines.append(f"no valid judge reply after retries: {counts} (left out of the ranking)")
        lines += [s.line() for s in self.summaries]
        lines += [f"warning: {w}" for w in self.warnings]
        return lines


def quality(records: list[Record], judge: ChatModel, params: QualityParams, prompt: Prompt) -> QualityResult:
    verdicts = judge_records(records, judge, params, prompt)
    lengths = [record_length(r) for r in records]
    threshold = float(np.percentile(lengths, params.length_percentile)) if records else 0.0
    annotated, ranked, failures = [], [], []
    for record, verdict, length in zip(records, verdicts, lengths, strict=True):
        if verdict["status"] != "ok":
            record = record.with_meta(judge=verdict)
            failures.append(record)
        else:
            score = length_score(length, threshold)
            final = params.judge_weight * verdict["total"] + params.length_weight * score
            record = record.with_meta(judge=verdict, length_score=score, quality=final)
            ranked.append(record)
        annotated.append(record)
    ranked.sort(key=lambda r: -r.meta["quality"])  # stable: equal scores keep their input order

    rng = random.Random(params.seed)
    wanted = params.count(len(records))
    kept = ranked[:wanted]
    kept = rng.sample(kept, len(kept))
    baseline = rng.sample(annotated, len(kept))

    summaries = [
        Summary.of(name, top, [r.meta["judge"]["scores"][name] for r in ranked])
        for name, top in DIMENSIONS.items()
    ]
    summaries.append(Summary.of("total", 100, [r.meta["judge"]["total"] for r in ranked]))
    best = 100 * (params.judge_weight + params.length_weight)
    summaries.append(Summary.of("quality", best, [r.meta["quality"] for r in ranked]))
    warnings = uniformity_warnings([r.meta["judge"]["total"] for r in ranked])
    if wanted > len(ranked):
        warnings.append(f"asked for {wanted} records but only {len(ranked)} were judged; kept all of them")
    return QualityResult(ranked, kept, baseline, failures, threshold, summaries, warnings)


def judge_records(
    records: list[Record], judge: ChatModel, params: QualityParams, prompt: Prompt
) -> list[dict[str, Any]]:
    """One verdict per record (what `meta["judge"]` holds); each retry asks again only for the failures.

    A status is 'ok', a parse status of `parse_judge_reply`, or 'truncated' / 'prompt_too_long' when the
    reply was cut off or never came; the latter is not asked again.
    """
    conversations = [prompt.conversation(r.instruction, r.input, r.output) for r in records]
    verdicts: list[dict[str, Any]] = [{} for _ in records]
    pending = list(range(len(records)))
    for attempt in range(params.retries + 1):
        if not pending:
            break
        sampling = Sampling(
            temperature=params.temperature if attempt == 0 else params.retry_temperature,
            max_tokens=params.max_tokens,
            seed=params.seed + attempt,
        )
        label = "quality: judge" if attempt == 0 else f"quality: judge retry {attempt}"
        asked = [conversations[i] for i in pending]
        replies = chat(judge, asked, sampling, label=label, json_schema=JUDGE_SCHEMA)
        for index, reply in zip(pending, replies, strict=True):
            status, scores = parse_judge_reply(reply.text)
            if status != "ok" and reply_status(reply) in _UNANSWERED:
                status = reply_status(reply)
            verdict: dict[str, Any] = {"status": status}
            if scores is not None:
                verdict.update(scores=scores, total=sum(scores.values()))
            verdict.update(raw=reply.text, retries=attempt, model=judge.name)
            verdicts[index] = verdict
        # Asking again cannot shorten a prompt the model does not accept.
        pending = [i for i in pending if verdicts[i]["status"] not in ("ok", "prompt_too_long")]
    return verdicts


def parse_judge_reply(text: str) -> tuple[str, dict[str, int] | None]:
    """(status, scores): 'ok' with every dimension's integer score, or why the reply is not a score.

    Statuses: empty, invalid_json (no JSON object in the text), missing_field, not_integer, out_of_range.
    Text around the JSON object (a code fence, a sentence) is ignored; so are keys beyond the rubric.
    """
    if not text.strip():
        return "empty", None
    found = _first_json_object(text)
    if found is None:
        return "invalid_json", None
    if any(name not in found for name in DIMENSIONS):
        return "missing_field", None
    scores = {}
    for name, top in DIMENSIONS.items():
        value = found[name]
        # JSON Schema counts 12.0 as an integer; True is a bool, not a score.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            return "not_integer", None
        if not 0 <= value <= top:
            return "out_of_range", None
        scores[name] = int(value)
    return "ok", scores


def _first_json_object(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
            return value
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def record_length(record: Record) -> int:
    """L: characters of instruction, input and output, tabs and newlines not counted (as in the paper)."""
    text = record.instruction + record.input + record.output
    return len(text.replace("\t", "").replace("\n", ""))


def length_score(length: int, threshold: float) -> float:
    """100 for a record at least as long as T, else proportionally less."""
    if length >= threshold:
        return 100.0
    return 100.0 * length / threshold


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
