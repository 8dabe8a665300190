"""What the three LLM phases (enhance, expand, quality) share in how they call a `ChatModel`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .llm import PROMPT_TOO_LONG, CachedChat, ChatModel, Conversation, Reply, Sampling


def chat(
    model: ChatModel,
    conversations: Sequence[Conversation],
    sampling: Sampling,
    *,
    label: str,
    json_schema: dict[str, Any] | None = None,
) -> list[Reply]:
    """One batched call; `CachedChat` names its progress bar `label`, e.g. "expand round 2: answers"."""
    if isinstance(model, CachedChat):
        model = model.labelled(label)
    return model.chat(conversations, sampling, json_schema)


def reply_status(reply: Reply) -> str:
    """'ok', or why the reply is not usable: 'prompt_too_long' for the engine, 'truncated' (cut off at
    max_tokens) or 'empty'."""
    if reply.finish_reason == PROMPT_TOO_LONG:
        return "prompt_too_long"
    if reply.finish_reason == "length":
        return "truncated"
    if not reply.text.strip():
        return "empty"
    return "ok"


def check_sampling(temperature: float, max_tokens: int, name: str = "temperature") -> None:
    """Parameter checks for a phase's sampling settings; the ValueError names the field."""
    if not 0 <= temperature <= 2:
        raise ValueError(f"{name} must be between 0 and 2, got {temperature}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
