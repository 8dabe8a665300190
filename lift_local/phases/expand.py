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
import functools
import hashlib
import re
from collections import Counter
from typing import Any, Literal

from ..params import option
from ..records import EXPANDED, Provenance, Record, content_id
from . import Executor, GenerationParams, Kit, Mapped, Outcome, Phase

# A label the rewriter may put before its rewrite ("Rewritten prompt:", "**Rewritten Task**:").
_LABEL = re.compile(r"\A[\s#*]*rewritten\s+(?:prompt|task|instruction)[\s#*]*:[\s*]*", re.IGNORECASE)
# The line that starts the rewrite's own input, as in the paper's reference scripts ("Input:", "### Input:").
_INPUT_MARKER = re.compile(r"^[ \t#*]*Input[ \t*]*:[ \t*]*", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class ExpandParams(GenerationParams):
    rounds: int = option(
        2, "Rounds of rewriting; each round rewrites the previous round's new instructions.", flags=("-k",), low=1
    )  # the paper's code set: 20k originals + 2 rounds of 20k = about 60k
    task: Literal["nlu", "code"] = option(
        "nlu",
        "Which rewriting rules: natural-language tasks (deeper, more specific, multi-step) or code tasks "
        "(constraints, rarer requirements, misleading code, complexity).",
        required=True,
    )


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """What `select` needs of one rewrite: why it is unusable, if it is, and its key for duplicates."""

    problem: str | None
    key: str  # the rewrite's instruction and input, normalised and hashed
    parent_key: str


class Expand(Phase, name="expand", title="Expansion", params=ExpandParams, order=30, roles=("rewriter",),
             prompts={"prompt": "expand_{task}", "answer_prompt": "enhance"}):
    """LIFT phase 2: rewrite IN's instructions into harder ones for K rounds and answer each; write IN's
    records plus every round's new records to OUT (JSONL).

    New records carry lift.origin = expanded, lift.round, lift.parent (the rewritten record's id) and
    lift.root (the original's). A rewrite that gives no usable record (empty, cut off, identical to its
    parent, a duplicate, or its answer empty or cut off) is counted per reason in the summary.
    """

    def run(self, records: list[Record], executor: Executor) -> Outcome:
        """Round r rewrites the records round r-1 produced: rewrite (map), drop duplicates (select),
        answer (map), drop unusable answers (select)."""
        seen: set[str] | None = None  # keys of every instruction and input in the data so far
        parents, new_records, rounds = records, [], []
        for number in range(1, self.params.rounds + 1):
            drafts = executor.map(functools.partial(self.rewrite, round=number), parents)
            if seen is None:
                seen = {d.features.parent_key for d in drafts}
            unusable: Counter[str] = Counter()
            usable = []
            for draft in drafts:
                rewrite: Rewrite = draft.features
                problem = rewrite.problem or ("duplicate" if rewrite.key in seen else None)
                if problem:
                    unusable[problem] += 1
                else:
                    seen.add(rewrite.key)
                    usable.append(draft.record)
            children = []
            for answered in executor.map(functools.partial(self.answer, round=number), usable):
                if answered.features != "ok":
                    unusable[f"answer_{answered.features}"] += 1
                else:
                    children.append(answered.record)
            rounds.append({"round": number, "parents": len(parents), "new": len(children), "unusable": dict(unusable)})
            new_records += children
            parents = children
            if not parents:
                break
        stats = {"records": len(records) + len(new_records), "new": len(new_records), "rounds": rounds}
        return Outcome(records + new_records, stats=stats)

    def rewrite(self, batch: list[Record], kit: Kit, round: int) -> list[Mapped]:
        """Each parent's rewrite as a draft record (no answer yet), with what `run` decides on."""
        prompt, rewriter = self.prompt(kit), kit.chat("rewriter")
        conversations = [prompt.conversation(p.instruction, p.input) for p in batch]
        replies = rewriter.chat(conversations, self.params.sampling(), label=f"expand round {round}: rewrites")
        drafts = []
        for parent, reply in zip(batch, replies, strict=True):
            instruction, input = parse_rewrite(reply.text)
            features = Rewrite(_problem(reply.status, parent, instruction, input), _key(instruction, input),
                               _key(parent.instruction, parent.input))
            provenance = Provenance(EXPANDED, round=round, parent=parent.id, root=Provenance.of(parent).root or parent.id)
            meta = {**provenance.to_meta(), "task": self.params.task, "rewriter": rewriter.name}
            drafts.append(Mapped(Record(instruction, input, "", id=parent.id, meta=meta), features))
        return drafts

    def answer(self, batch: list[Record], kit: Kit, round: int) -> list[Mapped]:
        """Each draft answered, with the reply's status as its feature."""
        prompt, rewriter = self.prompt(kit, "answer_prompt"), kit.chat("rewriter")
        conversations = [prompt.conversation(d.instruction, d.input) for d in batch]
        replies = rewriter.chat(conversations, self.params.sampling(), label=f"expand round {round}: answers")
        answered = []
        for draft, reply in zip(batch, replies, strict=True):
            output = reply.text.strip()
            record = draft.replace(output=output, id=content_id(draft.instruction, draft.input, output))
            answered.append(Mapped(record, reply.status))
        return answered

    def workload(self, records: int) -> tuple[int, int]:
        """At most: each round rewrites and answers as many records as there are, every one usable."""
        return 2 * self.params.rounds * records, (1 + self.params.rounds) * records

    def summary(self, outcome: Outcome) -> list[str]:
        stats = outcome.stats
        lines = [f"{stats['records'] - stats['new']} records + {stats['new']} new = {stats['records']}"]
        for r in stats["rounds"]:
            lost = ", ".join(f"{n} {reason}" for reason, n in Counter(r["unusable"]).most_common()) or "none"
            lines.append(f"round {r['round']}: {r['parents']} rewritten, {r['new']} new records, unusable: {lost}")
        if len(stats["rounds"]) < self.params.rounds:
            lines.append(f"stopped after round {len(stats['rounds'])}: it gave no usable record to rewrite further")
        return lines

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        return "; ".join(
            f"round {r['round']}: {r['new']} new, unusable: "
            + (", ".join(f"{k}={v}" for k, v in r["unusable"].items()) or "none")
            for r in stats.get("rounds", [])
        )


def parse_rewrite(text: str) -> tuple[str, str]:
    """Split a rewriter's reply into (instruction, input): the input starts at the first `Input:` line."""
    text = _LABEL.sub("", text.strip())
    marker = _INPUT_MARKER.search(text)
    if marker is None:
        return text.strip(), ""
    return text[: marker.start()].strip(), text[marker.end() :].strip()


def _problem(status: str, parent: Record, instruction: str, input: str) -> str | None:
    """Why a rewrite cannot be used, as far as the rewrite alone tells (duplicates are `run`'s to find)."""
    if status in ("prompt_too_long", "truncated"):
        return f"rewrite_{status}"
    if not instruction:
        return "rewrite_empty"
    if _key(instruction, input) == _key(parent.instruction, parent.input):
        return "rewrite_identical"
    return None


def _key(instruction: str, input: str) -> str:
    """Instruction and input, compared without regard to case or spacing, hashed to stay compact."""
    normal = " ".join(instruction.split()).casefold() + "\x1f" + " ".join(input.split()).casefold()
    return hashlib.sha256(normal.encode()).hexdigest()[:24]
