"""Test doubles. `FakeChat` stands in for a real LLM in fast unit tests only; every phase also has a test
against the real vLLM engine (marked `vllm`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from lift_local.llm import Conversation, OnReply, Reply, Sampling
from lift_local.phases import Local, Outcome, Phase
from lift_local.prompts import load_prompt
from lift_local.records import Record


@dataclasses.dataclass
class FakeChatCall:
    """One `chat` call as the fake received it."""

    conversations: list[Conversation]
    sampling: Sampling
    json_schema: dict[str, Any] | None


class FakeChat:
    """A `ChatModel` that answers without a model: from `respond(conversation) -> text` (or a whole `Reply`),
    or from a list of canned replies used in order across calls (an error when they run out).

    `calls` records every call. `fail_after=k` raises `FakeChatInterrupted` after k replies have been
    delivered through `on_reply` in one call, to simulate an interruption mid-batch. `finish_reason` and
    `logprobs` are given to every reply. Replies are delivered in reverse input order through `on_reply`, as a real engine
    finishes them out of order, while the returned list stays in input order.
    """

    def __init__(
        self,
        respond: Callable[[Conversation], str] | Sequence[str],
        *,
        name: str = "fake-chat",
        finish_reason: str = "stop",
        fail_after: int | None = None,
        logprobs: list[dict[str, float]] | None = None,
    ):
        self.name = name
        self.finish_reason = finish_reason
        self.logprobs = logprobs
        self.fail_after = fail_after
        self.calls: list[FakeChatCall] = []
        if callable(respond):
            self._respond = respond
            self._canned: list[str] | None = None
        else:
            self._respond = None
            self._canned = list(respond)

    @property
    def conversations_sent(self) -> list[Conversation]:
        """Every conversation any call received, in order."""
        return [c for call in self.calls for c in call.conversations]

    def _reply(self, conversation: Conversation) -> Reply:
        answer = self._text(conversation)
        return answer if isinstance(answer, Reply) else Reply(answer, self.finish_reason, self.logprobs)

    def _text(self, conversation: Conversation) -> str | Reply:
        if self._respond is not None:
            return self._respond(conversation)
        if not self._canned:
            raise AssertionError("FakeChat ran out of canned replies")
        return self._canned.pop(0)

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        json_schema: dict[str, Any] | None = None,
        on_reply: OnReply | None = None,
        label: str = "",
    ) -> list[Reply]:
        conversations = [list(c) for c in conversations]
        self.calls.append(FakeChatCall(conversations, sampling, json_schema))
        replies = [self._reply(c) for c in conversations]
        for delivered, index in enumerate(reversed(range(len(replies)))):
            if self.fail_after is not None and delivered >= self.fail_after:
                raise FakeChatInterrupted(f"FakeChat interrupted after {delivered} replies")
            if on_reply is not None:
                on_reply(index, replies[index])
        return replies


class FakeChatInterrupted(RuntimeError):
    """Raised by `FakeChat(fail_after=k)`, standing in for Ctrl-C or a crash mid-batch."""


def last_user_message(conversation: Conversation) -> str:
    """Convenience for `respond` functions: the text of the conversation's last user turn."""
    return next(m["content"] for m in reversed(conversation) if m["role"] == "user")


def json_reply(**fields: Any) -> str:
    """Convenience for canned structured replies: `json_reply(score=4)` -> '{"score": 4}'."""
    return json.dumps(fields)


class FakeKit:
    """A `Kit` of the given models (fakes or real) and the bundled prompts, without caches."""

    def __init__(self, **models: Any):
        self.models = models

    def chat(self, role: str):
        return self.chats(role)[0]

    def chats(self, role: str):
        """A list given for a role is a jury."""
        models = self.models[role]
        return list(models) if isinstance(models, (list, tuple)) else [models]

    def embedder(self):
        return self.models["embedder"]

    def prompt(self, name: str, requires: tuple[str, ...]):
        return load_prompt(name, requires)


def run_phase(phase: Phase, records: list[Record], **models: Any) -> Outcome:
    """A phase composed in process, as `lift-local run` does, with the models given by role."""
    return phase.run(records, Local(FakeKit(**models)))


class FakeSentenceTransformer:
    """Stands in for a sentence-transformers model in fast tests: each word adds a fixed random vector (seeded
    by the word) and the sum is scaled to unit length, so texts that share words get similar embeddings and
    the same text the same one. Used behind the real `Embedder` and its cache (`fake_embedder` fixture)."""

    DIMENSION = 64

    def get_embedding_dimension(self) -> int:
        return self.DIMENSION

    def encode(self, texts, batch_size: int = 32, convert_to_numpy: bool = True, show_progress_bar: bool = False):
        import hashlib

        import numpy as np

        vectors = np.zeros((len(texts), self.DIMENSION), dtype=np.float32)
        for row, text in zip(vectors, texts):
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                row += np.random.default_rng(seed).standard_normal(self.DIMENSION).astype(np.float32)
            row /= max(float(np.linalg.norm(row)), 1e-9)
        return vectors
