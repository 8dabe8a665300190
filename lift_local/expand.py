"""LIFT phase 2, expansion ("Instruction-Elevate"): rewrite instructions into harder ones, then answer them.

Round r rewrites the instructions that round r-1 produced (round 1 rewrites the input records), so each
round climbs one step further from the originals. Each round makes two batched calls: all rewrites, then
all answers. A rewrite that yields no usable record is counted under its reason, per round, never
dropped silently:

    rewrite_prompt_too_long  the record is too long for the model to be asked at all
    rewrite_truncated        the rewrite was cut off at max_tokens
    rewrite_empty            nothing left once labels such as "Rewritten prompt:" are stripped
    rewrite_identical        the same instruction and input as its parent
    duplicate                an instruction and input already in the data set (or produced twice this round)
    answer_prompt_too_long   the new instruction is too long for the model to answer
    answer_truncated         the answer was cut off at max_tokens
    answer_empty             the answer was blank
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import Any, Literal

from .llm import ChatModel, Sampling
from .llm_calls import chat, check_sampling, reply_status
from .prompts import Prompt
from .records import Record, content_id

# A label the rewriter may put before its rewrite ("Rewritten prompt:", "**Rewritten Task**:").
_LABEL = re.compile(r"\A[\s#*]*rewritten\s+(?:prompt|task|instruction)[\s#*]*:[\s*]*", re.IGNORECASE)
# The line that starts the rewrite's own input, as in the paper's reference scripts ("Input:", "### Input:").
_INPUT_MARKER = re.compile(r"^[ \t#*]*Input[ \t*]*:[ \t*]*", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ExpandParams:
    rounds: int = 2  # the paper's code set: 20k originals + 2 rounds of 20k = about 60k
    task: Literal["nlu", "code"] = "nlu"  # picks the rewriting rules; recorded in every new record
    temperature: float = 0.7
    max_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.task not in ("nlu", "code"):
            raise ValueError(f"task must be 'nlu' or 'code', got {self.task!r}")
        check_sampling(self.temperature, self.max_tokens)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)


@dataclasses.dataclass
class RoundReport:
    round: int
    parents: int  # records this round rewrote
    new: int  # usable new records
    unusable: Counter[str]  # reason -> count; parents == new + sum(unusable)


@dataclasses.dataclass
class ExpandResult:
    records: list[Record]  # the input records, then every round's new records
    rounds: list[RoundReport]

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "records": len(self.records),
            "new": sum(r.new for r in self.rounds),
            "rounds": [
                {"round": r.round, "parents": r.parents, "new": r.new, "unusable": dict(r.unusable)}
                for r in self.rounds
            ],
        }


def expand(
    records: list[Record], rewriter: ChatModel, params: ExpandParams, prompt: Prompt, answer_prompt: Prompt
) -> ExpandResult:
    """`prompt` rewrites an instruction (expand_nlu / expand_code); `answer_prompt` answers one (enhance)."""
    sampling = params.sampling()
    seen = {_key(r.instruction, r.input) for r in records}
    parents, new_records, reports = records, [], []
    for number in range(1, params.rounds + 1):
        unusable: Counter[str] = Counter()
        conversations = [prompt.conversation(p.instruction, p.input) for p in parents]
        replies = chat(rewriter, conversations, sampling, label=f"expand round {number}: rewrites")
        rewrites = []  # (parent, instruction, input)
        for parent, reply in zip(parents, replies, strict=True):
            instruction, input = parse_rewrite(reply.text)
            reason = _rewrite_problem(reply_status(reply), parent, instruction, input, seen)
            if reason:
                unusable[reason] += 1
            else:
                seen.add(_key(instruction, input))
                rewrites.append((parent, instruction, input))
        conversations = [answer_prompt.conversation(instruction, input) for _, instruction, input in rewrites]
        answers = chat(rewriter, conversations, sampling, label=f"expand round {number}: answers")
        children = []
        for (parent, instruction, input), answer in zip(rewrites, answers, strict=True):
            status = reply_status(answer)
            if status != "ok":
                unusable[f"answer_{status}"] += 1
                continue
            output = answer.text.strip()
            meta = {
                "origin": "expanded",
                "round": number,
                "parent": parent.id,
                "root": parent.meta.get("root", parent.id),
                "task": params.task,
                "rewriter": rewriter.name,
            }
            new_id = content_id(instruction, input, output)
            children.append(Record(instruction, input, output, id=new_id, meta=meta))
        reports.append(RoundReport(number, len(parents), len(children), unusable))
        new_records += children
        parents = children
        if not parents:
            break
    return ExpandResult(records + new_records, reports)


def parse_rewrite(text: str) -> tuple[str, str]:
    """Split a rewriter's reply into (instruction, input): the input starts at the first `Input:` line."""
    text = _LABEL.sub("", text.strip())
    marker = _INPUT_MARKER.search(text)
    if marker is None:
        return text.strip(), ""
    return text[: marker.start()].strip(), text[marker.end() :].strip()


def _rewrite_problem(
    status: str, parent: Record, instruction: str, input: str, seen: set[tuple[str, str]]
) -> str | None:
    if status in ("prompt_too_long", "truncated"):
        return f"rewrite_{status}"
    if not instruction:
        return "rewrite_empty"
    if _key(instruction, input) == _key(parent.instruction, parent.input):
        return "rewrite_identical"
    if _key(instruction, input) in seen:
        return "duplicate"
    return None


def _key(instruction: str, input: str) -> tuple[str, str]:
    """Instruction and input, compared without regard to case or spacing."""
    return " ".join(instruction.split()).casefold(), " ".join(input.split()).casefold()
