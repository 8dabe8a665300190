"""LIFT phase 1, enhancement: the rewriter writes a new answer for every record.

The paper's reason: original answers (Code Alpaca's were written by text-davinci-003) are often short or
wrong, and a stronger model's answer is better training signal. The original answer stays in the record's
metadata. A reply that is empty, was cut off at `max_tokens`, or never came because the prompt is longer
than the model accepts is not an answer: the record keeps its original answer and says why in
`meta["enhance_status"]`, and the result counts it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from ..records import Record
from . import GenerationParams, Kit, Mapped, Outcome, Phase, Selection


@dataclasses.dataclass(frozen=True)
class EnhanceParams(GenerationParams):
    pass


class Enhance(Phase, name="enhance", title="Enhancement", params=EnhanceParams, order=20, roles=("rewriter",),
              prompts={"prompt": "enhance"}):
    """LIFT phase 1: the rewriter writes a new answer for every record of IN; all records go to OUT (JSONL).

    Each record keeps its original answer in its metadata (lift.original_output). A reply that is empty
    or cut off at --max-tokens leaves the original answer in place, marked in lift.enhance_status, and
    is counted in the summary.
    """

    def map(self, batch: list[Record], kit: Kit) -> list[Mapped]:
        prompt, rewriter = self.prompt(kit), kit.chat("rewriter")
        conversations = [prompt.conversation(r.instruction, r.input) for r in batch]
        replies = rewriter.chat(conversations, self.params.sampling(), label="enhance")
        mapped = []
        for record, reply in zip(batch, replies, strict=True):
            # An answer enhanced twice keeps the first original.
            original = record.meta.get("original_output", record.output)
            output = reply.text.strip() if reply.status == "ok" else record.output
            meta = {"original_output": original, "enhance_status": reply.status, "enhanced_by": rewriter.name}
            mapped.append(Mapped(record.replace(output=output).with_meta(**meta), reply.status))
        return mapped

    def select(self, features: list[str]) -> Selection:
        counts = Counter(features)
        unchanged = {status: n for status, n in counts.items() if status != "ok"}
        stats = {"records": len(features), "ok": counts["ok"], "unchanged": unchanged}
        return Selection(keep=list(range(len(features))), stats=stats)

    def summary(self, outcome: Outcome) -> list[str]:
        stats = outcome.stats
        lines = [f"enhanced {stats['ok']} of {stats['records']} records"]
        unchanged = stats["unchanged"]
        if unchanged:
            reasons = ", ".join(f"{n} {status}" for status, n in unchanged.items())
            hint = "; a larger --max-tokens avoids truncated replies" if "truncated" in unchanged else ""
            lines.append(f"kept the original answer of {sum(unchanged.values())} ({reasons}){hint}")
        return lines

    @classmethod
    def notes(cls, stats: dict[str, Any]) -> str:
        return "original answer kept: " + ", ".join(f"{k}={v}" for k, v in stats["unchanged"].items()) if stats.get("unchanged") else ""
