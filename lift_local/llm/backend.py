"""`load_chat_model`: the backend (a vLLM engine in this process, or a server's client) that plays a chat role;
`load_reader`: the engine that reads a model's hidden states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import models
from . import ChatModel, StatesModel


def load_chat_model(
    role: str,
    override: str | None = None,
    *,
    server_url: str | None = None,
    api_key: str = "EMPTY",
    max_concurrency: int = 32,
    engine_options: Mapping[str, Any] | None = None,
) -> ChatModel:
    """The model for a chat `role` (e.g. "rewriter" or "judge").

    With `server_url`: a client of that OpenAI-compatible server, asking for the served model `override`
    (default: the server's only model). Otherwise a vLLM engine in this process for the registry's model or
    `override` (a registered name or a model folder), with `engine_options` (vllm.LLM settings) over the
    registry entry's. A packaged model is converted on first use. When rewriter and judge are the same
    model, they share one engine. Nothing starts (or imports vLLM) until the first request.
    """
    if server_url:
        from .server import ServerChat

        return ServerChat(server_url, override, api_key=api_key, max_concurrency=max_concurrency)
    from .inprocess import shared_engine

    spec = models.resolve(role, override)
    if spec.kind != "chat":
        raise models.ModelError(f"model {spec.name} is an {spec.kind} model; the {role} needs a chat model")
    return shared_engine(models.ensure_present(spec), spec.name, {**spec.vllm, **(engine_options or {})})


def load_reader(override: str | None, layers: int, dtype: str) -> StatesModel:
    """A vLLM engine in this process that reads the hidden states of the `reader` role's model (or `override`,
    a registered name or a model folder) after its first `layers` layers, in `dtype`, with the registry
    entry's engine settings. Nothing starts until the first request."""
    from .inprocess import VLLMStates, shared_engine, states_settings

    spec = models.resolve("reader", override)
    path = models.ensure_present(spec)
    return shared_engine(path, spec.name, {**spec.vllm, **states_settings(path, layers), "dtype": dtype}, VLLMStates)
