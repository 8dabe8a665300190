"""The one interface every LLM phase talks to: a batch of chat conversations in, replies out.

Phases never import vLLM; they receive a `ChatModel`. Backends: vLLM in process, and an OpenAI-compatible
server (`vllm serve`) on the user's own network. `CachedChat` wraps either so that every finished reply is
stored at once and an interrupted phase redoes only what is missing. `load_chat_model` builds the model a
role (rewriter, judge) is assigned in the registry (see models.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from . import models
from .store import Store

Conversation = list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": "..."}]

DEFAULT_SERVER_URL = "http://127.0.0.1:8000/v1"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling parameters; part of every reply's cache key.

    The seed is given to each request on its own, so a reply does not depend on what else was in the batch.
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
    # With Sampling.logprobs: for each generated token, the most likely tokens and their log-probabilities.
    logprobs: list[dict[str, float]] | None = None

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Reply:
        return cls(**json.loads(data))


OnReply = Callable[[int, Reply], None]  # called with the conversation's index as each reply finishes

# A prompt longer than the engine's max_model_len gets an empty reply with this finish reason instead of
# failing the whole batch. It depends on engine settings, not on the request, so it is never cached.
PROMPT_TOO_LONG = "prompt_too_long"


def _is_prompt_too_long(error: Exception) -> bool:
    """vLLM's errors for such a prompt, raised in process and returned by a server (HTTP 400)."""
    return "maximum context length" in str(error) or "maximum model length" in str(error)


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


# --- vLLM in this process ---------------------------------------------------------------------------------


class VLLMChat:
    """A vLLM engine in this process. The whole batch is queued at once so the engine schedules it
    continuously; each reply is handed to `on_reply` the moment it finishes, so nothing waits for the
    slowest request before it can be stored.

    The engine starts on the first request, so a run answered wholly from the cache never starts one, and
    starting it shuts down any other engine of this process: the phases use one model at a time, and two
    engines would not fit one GPU. A closed engine starts again when needed.

    vLLM runs the engine in a spawned process: a script using this needs an `if __name__ == "__main__":`
    guard (console scripts and pytest have one).
    """

    def __init__(self, path: Path | str, name: str, **engine_settings: Any):
        self.name = name
        self.path = Path(path)
        self.settings = engine_settings  # over lift-local's defaults (see `engine_settings`)
        self._llm = None

    @property
    def llm(self):
        """The `vllm.LLM`, started on first use."""
        if self._llm is None:
            from vllm import LLM

            for other in _ENGINES.values():
                if other is not self:
                    other.close()
            self._llm = LLM(model=str(self.path), **engine_settings(self.settings))
        return self._llm

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        json_schema: dict[str, Any] | None = None,
        on_reply: OnReply | None = None,
    ) -> list[Reply]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.sampling_params import StructuredOutputsParams

        from vllm.platforms import current_platform

        if not conversations:
            return []
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            # vLLM on CPU kills its engine ("CPU Generator does not use offset") when a request with its
            # own seed has a token discarded after a chunked prefill, as happens in large batches. There
            # the engine's seed serves instead; the reply cache keeps re-runs reproducible either way.
            seed=None if current_platform.is_cpu() else sampling.seed,
            logprobs=sampling.logprobs or None,
            structured_outputs=StructuredOutputsParams(json=json_schema) if json_schema is not None else None,
        )
        engine = self.llm.llm_engine
        replies: list[Reply | None] = [None] * len(conversations)
        request_ids: dict[str, int] = {}  # vLLM's internal id ("<id>-<8 random chars>") -> index
        try:
            for i, conversation in enumerate(conversations):  # one by one, so one bad prompt fails alone
                try:
                    (request_id,) = self.llm.enqueue_chat([list(conversation)], params, use_tqdm=False)
                    request_ids[request_id] = i
                except VLLMValidationError as e:
                    if not _is_prompt_too_long(e):
                        raise
                    replies[i] = Reply("", PROMPT_TOO_LONG)
                    if on_reply is not None:
                        on_reply(i, replies[i])
            index_of = {request_id.rsplit("-", 1)[0]: i for request_id, i in request_ids.items()}  # outputs: <id>
            while engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished:
                        i = index_of[output.request_id]
                        replies[i] = _vllm_reply(output.outputs[0])
                        if on_reply is not None:
                            on_reply(i, replies[i])
        finally:  # interrupted: leave the engine empty for the next call
            unfinished = [request_id for request_id, i in request_ids.items() if replies[i] is None]
            if unfinished:
                engine.abort_request(unfinished, internal=True)
        return replies  # type: ignore[return-value]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None


def _vllm_reply(completion: Any) -> Reply:
    logprobs = None
    if completion.logprobs is not None:
        logprobs = [
            {entry.decoded_token: entry.logprob for entry in position.values()} for position in completion.logprobs
        ]
    return Reply(completion.text, completion.finish_reason or "stop", logprobs)


def engine_settings(chosen: Mapping[str, Any]) -> dict[str, Any]:
    """vllm.LLM settings: lift-local's device-aware defaults, overridden by the `chosen` ones.

    JSON replies are compact: with whitespace allowed between JSON tokens, a small model can emit newlines
    and tabs until max_tokens (seen with SmolLM2). That setting is engine-wide in vLLM and needs the
    xgrammar or guidance backend; guidance also covers more of JSON Schema (e.g. maxLength).
    On CPU, `gpu_memory_utilization` would mean a fraction of all RAM (and fail when less is free), so
    the KV cache gets a fixed size instead; eager mode starts in ~30 s instead of ~100 s for ~8% less speed.
    """
    from vllm.platforms import current_platform

    settings: dict[str, Any] = {
        "max_model_len": 4096,
        "enable_prefix_caching": True,
        "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
    }
    if current_platform.is_cpu():
        settings.update(enforce_eager=True, kv_cache_memory_bytes=2 * 1024**3)
    return settings | dict(chosen)


# --- an OpenAI-compatible server ------------------------------------------------------------------------


class ServerChat:
    """A client of an OpenAI-compatible server (`vllm serve`) at an address the user gives.

    Up to `max_concurrency` requests are in flight at once, so the server can batch them; failed requests
    (connection errors, 429, 5xx) are retried with exponential back-off by the openai client. The base URL
    and key are passed explicitly and proxies from the environment are ignored, so no OPENAI_* or proxy
    variable can send data anywhere else. `model` is the served model name; by default the server's only one.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_SERVER_URL,
        model: str | None = None,
        *,
        api_key: str = "EMPTY",
        max_concurrency: int = 32,
        max_retries: int = 5,
        timeout: float = 600.0,
    ):
        import openai

        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url = base_url
        self.max_concurrency = max_concurrency
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=max_retries,
            timeout=timeout,
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )
        self.name = model or self._only_served_model()

    def _only_served_model(self) -> str:
        import openai

        try:
            served = [m.id for m in self.client.models.list()]
        except openai.APIError as e:
            raise models.ModelError(f"cannot list the models served at {self.base_url}: {e}") from e
        if len(served) != 1:
            raise models.ModelError(
                f"{self.base_url} serves {len(served)} models ({', '.join(served) or 'none'}); name one of them"
            )
        return served[0]

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        json_schema: dict[str, Any] | None = None,
        on_reply: OnReply | None = None,
    ) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(conversations)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="lift-local-chat")
        try:
            futures = {pool.submit(self._one, c, sampling, json_schema): i for i, c in enumerate(conversations)}
            for future in as_completed(futures):
                i = futures[future]
                replies[i] = future.result()
                if on_reply is not None:
                    on_reply(i, replies[i])
        finally:  # on an error or Ctrl-C, queued requests are dropped rather than sent
            pool.shutdown(wait=False, cancel_futures=True)
        return replies  # type: ignore[return-value]

    def _one(self, conversation: Conversation, sampling: Sampling, json_schema: dict[str, Any] | None) -> Reply:
        import openai

        extra: dict[str, Any] = {}
        if json_schema is not None:
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": "reply", "schema": json_schema}}
        if sampling.logprobs:
            extra.update(logprobs=True, top_logprobs=sampling.logprobs)
        try:
            response = self.client.chat.completions.create(
                model=self.name,
                messages=conversation,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed,
                **extra,
            )
        except openai.BadRequestError as e:
            if not _is_prompt_too_long(e):
                raise
            return Reply("", PROMPT_TOO_LONG)
        choice = response.choices[0]
        logprobs = None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            logprobs = [{top.token: top.logprob for top in position.top_logprobs} for position in choice.logprobs.content]
        return Reply(choice.message.content or "", choice.finish_reason or "stop", logprobs)


# --- the reply cache ------------------------------------------------------------------------------------


def reply_key(model_name: str, conversation: Conversation, sampling: Sampling, json_schema: dict[str, Any] | None) -> str:
    """Everything that determines a reply, hashed: the same request is never sent twice."""
    payload = [model_name, conversation, dataclasses.asdict(sampling), json_schema]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class CachedChat:
    """Any ChatModel behind a reply store: only requests without a stored reply go to the model, all in one
    call, and each reply is stored as it finishes (committed at least every `commit_seconds`, and on any
    exit), so an interrupted phase loses about a second of work. Shows a progress bar labelled `label`.
    """

    def __init__(self, model: ChatModel, store: Store, label: str = "LLM", commit_seconds: float = 1.0):
        self.model = model
        self.store = store
        self.label = label
        self.commit_seconds = commit_seconds
        self.name = model.name

    def labelled(self, label: str) -> CachedChat:
        """The same model and cache, with another progress-bar label."""
        return CachedChat(self.model, self.store, label, self.commit_seconds)

    def chat(
        self,
        conversations: Sequence[Conversation],
        sampling: Sampling,
        json_schema: dict[str, Any] | None = None,
        on_reply: OnReply | None = None,
    ) -> list[Reply]:
        keys = [reply_key(self.name, c, sampling, json_schema) for c in conversations]
        stored = self.store.get_many(keys)
        replies = [Reply.from_json(stored[key]) if key in stored else None for key in keys]
        positions: dict[str, list[int]] = {}  # missing key -> where it occurs; duplicates are sent once
        for i, key in enumerate(keys):
            if replies[i] is None:
                positions.setdefault(key, []).append(i)
        todo = list(positions)
        uncommitted: dict[str, bytes] = {}
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal last_commit
            if uncommitted:
                self.store.put_many(uncommitted)
                uncommitted.clear()
            last_commit = time.monotonic()

        with tqdm(
            total=len(keys), initial=len(keys) - sum(map(len, positions.values())), desc=self.label,
            unit="reply", file=sys.stderr, dynamic_ncols=True,
        ) as bar:

            def finished(j: int, reply: Reply) -> None:
                if reply.finish_reason != PROMPT_TOO_LONG:
                    uncommitted[todo[j]] = reply.to_json()
                if time.monotonic() - last_commit >= self.commit_seconds:
                    commit()
                for i in positions[todo[j]]:
                    replies[i] = reply
                    if on_reply is not None:
                        on_reply(i, reply)
                bar.update(len(positions[todo[j]]))

            if on_reply is not None:
                for i, reply in enumerate(replies):
                    if reply is not None:
                        on_reply(i, reply)
            try:
                if todo:
                    self.model.chat([conversations[positions[key][0]] for key in todo], sampling, json_schema, finished)
            finally:
                commit()
        return replies  # type: ignore[return-value]


# --- building the model a role is assigned --------------------------------------------------------------

_ENGINES: dict[tuple[str, str], VLLMChat] = {}  # one engine per model and settings, shared by the roles


def load_chat_model(
    role: str,
    override: str | None = None,
    *,
    server_url: str | None = None,
    api_key: str = "EMPTY",
    max_concurrency: int = 32,
    engine_options: Mapping[str, Any] | None = None,
) -> ChatModel:
    """The model for `role` ("rewriter" or "judge").

    With `server_url`: a client of that OpenAI-compatible server, asking for the served model `override`
    (default: the server's only model). Otherwise a vLLM engine in this process for the registry's model or
    `override` (a registered name or a model folder), with `engine_options` (vllm.LLM settings) over the
    registry entry's. A packaged model is converted on first use. When rewriter and judge are the same
    model, they share one engine. Nothing starts (or imports vLLM) until the first request.
    """
    if server_url:
        return ServerChat(server_url, override, api_key=api_key, max_concurrency=max_concurrency)
    spec = models.resolve(role, override)
    if spec.kind != "chat":
        raise models.ModelError(f"model {spec.name} is an {spec.kind} model; the {role} needs a chat model")
    path = models.ensure_present(spec)
    settings = {**spec.vllm, **(engine_options or {})}
    key = (str(path), json.dumps(settings, sort_keys=True, default=str))
    if key not in _ENGINES:
        _ENGINES[key] = VLLMChat(path, spec.name, **settings)
    return _ENGINES[key]


def close_engines() -> None:
    """Shuts down every engine `load_chat_model` started, freeing its memory (and its CPU or GPU)."""
    for engine in _ENGINES.values():
        engine.close()
