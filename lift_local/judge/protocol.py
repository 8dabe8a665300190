"""The judge's protocol: LIFT's rubric, how a judge is asked, and how its reply becomes a score.

The judge replies in JSON constrained to one bounded integer per dimension; the total is computed here,
never taken from the judge. A reply that does not parse is never a score: the judge is asked again (with
another seed, at `retry_temperature`) up to `retries` times, and a record still without a valid reply keeps
its raw reply, its parse status and its retry count (`Verdict`). With expected scores, the judge writes one
digit per dimension and each dimension's score is the probability-weighted mean of the ten digits, read
from the token probabilities at the digit's position (as DEITA and G-Eval do).

The quality phase, `judge-eval` and `judge-fit` all judge through `judge_records`. LIFT's length score,
which the paper adds to the judge's total, and the size of a selection (`top`) are here too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import TYPE_CHECKING, Any, Protocol

from ..llm import ChatModel, Reply, Sampling

if TYPE_CHECKING:
    from ..prompts import Prompt
    from ..records import Record

# LIFT's rubric: dimension -> maximum score; the maxima add up to 100.
DIMENSIONS = {"clarity": 15, "difficulty": 25, "explanation": 25, "accuracy": 35}
DIGITS = {name: 9 for name in DIMENSIONS}  # the rubric of expected scores: one digit a dimension


def judge_schema(maxima: dict[str, int]) -> dict[str, Any]:
    """The JSON the judge must reply with: one bounded integer per dimension."""
    properties = {name: {"type": "integer", "minimum": 0, "maximum": top} for name, top in maxima.items()}
    return {"type": "object", "properties": properties, "required": list(maxima), "additionalProperties": False}


JUDGE_SCHEMA = judge_schema(DIMENSIONS)
# vLLM's default cap on top logprobs (max_logprobs); above the 10 digits, so every value is read.
TOP_LOGPROBS = 20
# In a JSON reply, the text just before a dimension's value: `"accuracy":` (any spacing).
_BEFORE_VALUE = re.compile(r'"(' + "|".join(DIMENSIONS) + r')"\s*:\s*$')
_UNANSWERED = ("truncated", "prompt_too_long")  # reply statuses that explain a reply that does not parse


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judge's verdict on one record, as `meta["judge"]` holds it. `scores` and `total` are set only
    when the status is 'ok': a reply that does not parse is never a score."""

    status: str  # 'ok', a parse status of `parse_judge_reply`, 'truncated' or 'prompt_too_long'
    raw: str
    retries: int
    model: str
    scores: dict[str, float] | None = None  # the values the judge wrote, in points of LIFT's rubric
    total: float | None = None
    # With expected scores: each dimension's probability-weighted score in points, and their sum. A
    # dimension whose distribution could not be read keeps the value written and is named in `fallback`;
    # `missing_values` counts the digits that had no probability where the distribution was read.
    expected: dict[str, float] | None = None
    expected_total: float | None = None
    fallback: list[str] | None = None
    missing_values: int | None = None

    @property
    def ranking_total(self) -> float | None:
        """What the selection ranks by: the expected total where there is one."""
        return self.expected_total if self.expected_total is not None else self.total

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(**{field.name: data.get(field.name) for field in dataclasses.fields(cls)})

    @classmethod
    def of(cls, record: Record) -> Verdict | None:
        """The verdict a record carries, if the judge has seen it."""
        data = record.meta.get("judge")
        return cls.from_json(data) if isinstance(data, dict) else None


@dataclasses.dataclass(frozen=True)
class Score:
    """What LIFT's quality selection gave a judged record, as its metadata holds it: the final `quality`,
    judge_weight x the judge's total + length_weight x `length_score`."""

    quality: float
    length_score: float

    def to_meta(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Score | None:
        return cls(meta["quality"], meta["length_score"]) if "quality" in meta else None

    @classmethod
    def of(cls, record: Record) -> Score | None:
        """The score a record carries, if the quality selection ranked it."""
        return cls.from_meta(record.meta)


class Asking(Protocol):
    """How the judge is asked (the quality phase's parameters have these fields)."""

    temperature: float  # of the first request
    retry_temperature: float
    max_tokens: int
    seed: int
    retries: int
    expected: bool  # the digit rubric, read as expected scores


def judge_records(records: list[Record], judge: ChatModel, params: Asking, prompt: Prompt) -> list[Verdict]:
    """One verdict per record; each retry asks again only for the failures.

    A status is 'ok', a parse status of `parse_judge_reply`, or 'truncated' / 'prompt_too_long' when the
    reply was cut off or never came; the latter is not asked again.
    """
    conversations = [prompt.conversation(r.instruction, r.input, r.output) for r in records]
    maxima = DIGITS if params.expected else DIMENSIONS
    verdicts: list[Verdict | None] = [None] * len(records)
    pending = list(range(len(records)))
    for attempt in range(params.retries + 1):
        if not pending:
            break
        sampling = Sampling(
            temperature=params.temperature if attempt == 0 else params.retry_temperature,
            max_tokens=params.max_tokens,
            seed=params.seed + attempt,
            logprobs=TOP_LOGPROBS if params.expected else 0,
        )
        label = "quality: judge" if attempt == 0 else f"quality: judge retry {attempt}"
        asked = [conversations[i] for i in pending]
        replies = judge.chat(asked, sampling, json_schema=judge_schema(maxima), label=label)
        for index, reply in zip(pending, replies, strict=True):
            status, written = parse_judge_reply(reply.text, maxima)
            if status != "ok" and reply.status in _UNANSWERED:
                status = reply.status
            verdicts[index] = _verdict(status, reply, attempt, judge.name, written, params.expected)
        # Asking again cannot shorten a prompt the model does not accept.
        pending = [i for i in pending if verdicts[i].status not in ("ok", "prompt_too_long")]
    return verdicts  # type: ignore[return-value]


def _verdict(status: str, reply: Reply, retries: int, model: str, written: dict[str, int] | None,
             expected: bool) -> Verdict:
    """The verdict, with every score in points of LIFT's rubric (a digit d of a dimension worth m points is
    d * m / 9)."""
    if written is None:
        return Verdict(status, reply.text, retries, model)
    if not expected:
        return Verdict(status, reply.text, retries, model, written, sum(written.values()))
    scores = {name: written[name] * top / 9 for name, top in DIMENSIONS.items()}
    read = expected_digits(reply)
    fallback = [name for name in DIMENSIONS if name not in read]
    means = {name: read[name][0] * top / 9 if name in read else scores[name] for name, top in DIMENSIONS.items()}
    return Verdict(status, reply.text, retries, model, scores, sum(scores.values()), means, sum(means.values()),
                   fallback, sum(10 - read[name][1] for name in read))


def expected_digits(reply: Reply) -> dict[str, tuple[float, int]]:
    """Each dimension's expected digit and how many of the ten digits had a probability, read at the
    position where the judge wrote that dimension's digit; a dimension whose position or probabilities are
    not in the reply is absent, and so is one whose value goes on in the next token (a number of several
    tokens: its first token's probabilities are not the value's). Probabilities are renormalised over the
    digits read (a digit outside the top logprobs has none); a digit with and without a leading space
    counts as one value."""
    found: dict[str, tuple[float, int]] = {}
    tokens, text = reply.tokens or [], ""
    for i, (token, top) in enumerate(zip(tokens, reply.logprobs or [])):
        before = _BEFORE_VALUE.search(text)
        ends = i + 1 == len(tokens) or not tokens[i + 1].strip()[:1].isdigit()
        if before and _digit(token) is not None and ends and before.group(1) not in found:
            probabilities = dict.fromkeys(range(10), 0.0)
            for candidate, logprob in top.items():
                if (digit := _digit(candidate)) is not None:
                    probabilities[digit] += math.exp(logprob)
            mass = sum(probabilities.values())
            mean = sum(digit * p for digit, p in probabilities.items()) / mass
            found[before.group(1)] = (mean, sum(p > 0 for p in probabilities.values()))
        text += token
    return found


def _digit(token: str) -> int | None:
    token = token.strip()
    return int(token) if len(token) == 1 and token.isdigit() else None


def parse_judge_reply(text: str, maxima: dict[str, int] = DIMENSIONS) -> tuple[str, dict[str, int] | None]:
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
    for name, top in maxima.items():
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


def count_or_fraction(value: str) -> int | float:
    """`--top`'s text as a count of records (10000) or a fraction of them (0.5)."""
    try:
        return int(value) if value.strip().isdigit() else float(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a count nor a fraction") from None


def check_top(top: int | float) -> None:
    """The size of a selection, as the quality phase's `top`: a count of at least 1 or a fraction in (0, 1]."""
    count = isinstance(top, int) and not isinstance(top, bool) and top >= 1
    fraction = isinstance(top, float) and 0 < top <= 1
    if not (count or fraction):
        raise ValueError(f"must be a count of at least 1 or a fraction in (0, 1], got {top!r}")


def selection_size(top: int | float, records: int) -> int:
    """How many of `records` records a selection of size `top` keeps."""
    check_top(top)
    return max(1, round(top * records)) if isinstance(top, float) else top


def record_length(record: Record) -> int:
    """L: characters of instruction, input and output, tabs and newlines not counted (as in the paper)."""
    text = record.instruction + record.input + record.output
    return len(text.replace("\t", "").replace("\n", ""))


def length_score(length: int, threshold: float) -> float:
    """100 for a record at least as long as T, else proportionally less."""
    if length >= threshold:
        return 100.0
    return 100.0 * length / threshold

