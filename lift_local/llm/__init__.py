"""The one interface every LLM phase talks to: a batch of chat conversations in, replies out.

Phases never import vLLM; they receive a `ChatModel`. The backends live beside this module: `inprocess`
(a vLLM engine in this process) and `server` (an OpenAI-compatible endpoint such as `vllm serve` on the
user's own network); `cache.CachedChat` wraps either so that every finished reply is stored at once and an
interrupted phase redoes only what is missing; `backend.load_chat_model` builds the model a role is assigned,
`backend.load_reader` the engine that reads a model's hidden states (`StatesModel`) for a fitted scorer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

Conversation = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": "..."}]

# A prompt longer than the engine's max_model_len gets an empty reply with this finish reason instead of
# failing the whole batch. It depends on engine settings, not on the request, so it is never cached.
PROMPT_TOO_LONG = "prompt_too_long"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling parameters; part of every reply's cache key.

    The seed is given to each request on its own, so a reply does not depend on what else was in the batch,
    where the backend allows it (vLLM on GPU; see `inprocess.sampling_params` and `server.ServerChat`).
    `logprobs` > 0 asks for that many most likely tokens at each generated position (e.g. to turn a judge's
    score into an expected score).
    """

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int = 0
    logprobs: int = 0


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str  # "stop", "length", ...
    # With Sampling.logprobs: for each generated token, the most likely tokens and their log-probabilities,
    # and the token that was generated there (which need not be the most likely when sampling).
    logprobs: list[dict[str, float]] | None = None
    tokens: list[str] | None = None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Reply:
        return cls(**json.loads(data))

    @property
    def status(self) -> str:
        """'ok', or why the reply is not usable: 'prompt_too_long' for the engine, 'truncated' (cut off at
        max_tokens) or 'empty'."""
        if self.finish_reason == PROMPT_TOO_LONG:
            return "prompt_too_long"
        if self.finish_reason == "length":
            return "truncated"
        if not self.text.strip():
            return "empty"
        return "ok"


OnReply = Callable[[int, Reply], None]  # called with the conversation's index as each reply finishes


class ChatModel(Protocol):
    """What a phase needs of a model. `name` identifies the model's weights in cache keys.

    `label` names the work in progress bars ("expand round 2: answers"); a backend without one ignores it.
    """

    name: str

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling, json_schema: dict[str, Any] | None = None,
             on_reply: OnReply | None = None, label: str = "") -> list[Reply]: ...


class StatesModel(Protocol):
    """A frozen model read at one layer: one forward pass a prompt, no generation."""

    name: str

    def states(self, prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Each prompt's (tokens x hidden size) float32 hidden states; a prompt is token ids."""


def is_prompt_too_long(error: Exception) -> bool:
    """vLLM's errors for a prompt over max_model_len, raised in process and returned by a server (HTTP 400)."""
    return "maximum context length" in str(error) or "maximum model length" in str(error)


def check_sampling(temperature: float, max_tokens: int, name: str = "temperature") -> None:
    """Parameter checks for a phase's sampling settings; the ValueError names the field."""
    if not 0 <= temperature <= 2:
        raise ValueError(f"{name} must be between 0 and 2, got {temperature}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
