"""The one interface every LLM phase talks to: a batch of chat conversations in, replies out.

Phases never import vLLM; they receive a `ChatModel`. Backends: vLLM in process, and an OpenAI-compatible
server (`vllm serve`) on the user's own network. `CachedChat` wraps either so that every finished reply is
stored at once and an interrupted phase redoes only what is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

Conversation = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": "..."}]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling parameters; part of every reply's cache key."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop", "length", ...


OnReply = Callable[[int, Reply], None]  # called with the conversation's index as each reply finishes


class ChatModel(Protocol):
    """What a phase needs of a model. `name` identifies the model's weights in cache keys."""

    name: str

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        json_schema: dict[str, Any] | None = None,
        on_reply: OnReply | None = None,
    ) -> list[Reply]: ...
