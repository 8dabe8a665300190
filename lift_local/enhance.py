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

from .llm import ChatModel, Sampling
from .llm_calls import chat, check_sampling, reply_status
from .prompts import Prompt
from .records import Record


@dataclasses.dataclass(frozen=True)
class EnhanceParams:
    temperature: float = 0.7
    max_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.max_tokens)

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed)


@dataclasses.dataclass
class EnhanceResult:
    records: list[Record]  # every input record, in order, with a new answer where the reply was usable
    counts: Counter[str]  # status -> records

    @property
    def stats(self) -> dict[str, Any]:
        unchanged = {status: n for status, n in self.counts.items() if status != "ok" and n}
        return {"records": len(self.records), "ok": self.counts["ok"], "unchanged": unchanged}


def enhance(
    records: list[Record], rewriter: ChatModel, params: EnhanceParams, prompt: Prompt
) -> EnhanceResult:
    conversations = [prompt.conversation(r.instruction, r.input) for r in records]
    replies = chat(rewriter, conversations, params.sampling(), label="enhance")
    enhanced = []
    for record, reply in zip(records, replies, strict=True):
        status = reply_status(reply)
        # An answer enhanced twice keeps the first original.
        original = record.meta.get("original_output", record.output)
        output = reply.text.strip() if status == "ok" else record.output
        meta = {"original_output": original, "enhance_status": status, "enhanced_by": rewriter.name}
        enhanced.append(record.replace(output=output).with_meta(**meta))
    return EnhanceResult(enhanced, Counter(r.meta["enhance_status"] for r in enhanced))
