"""A vLLM engine in this process: the default backend, on CPU or GPU."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import console, cpu_engine, lifeline
from ..errors import EngineError
from . import PROMPT_TOO_LONG, Conversation, OnReply, Reply, Sampling, is_prompt_too_long


class VLLMChat:
    """A vLLM engine in this process. The whole batch is queued at once so the engine schedules it
    continuously; each reply is handed to `on_reply` the moment it finishes, so nothing waits for the
    slowest request before it can be stored.

    The engine starts on the first request, so a run answered wholly from the cache never starts one, and
    starting it shuts down any other engine of this process: the phases use one model at a time, and two
    engines would not fit one GPU. A closed engine starts again when needed.

    vLLM runs the engine in a spawned process: a script using this needs an `if __name__ == "__main__":`
    guard (console scripts and pytest have one). That process ends with this one however this one ends
    (`lifeline`). An engine that fails to start or dies is an EngineError that says where its log is.
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
            lifeline.guard()
            try:
                with cpu_engine.engine_environment_applied():  # the engine's processes start in here
                    self._llm = LLM(model=str(self.path), **engine_settings(self.settings))
            except Exception as e:
                raise EngineError(f"the vLLM engine for {self.name} failed to start: {_last_line(e)}"
                                  f"{console.full_log()}") from e
        return self._llm

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling, json_schema: dict[str, Any] | None = None,
             on_reply: OnReply | None = None, label: str = "") -> list[Reply]:
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        if not conversations:
            return []
        params = sampling_params(sampling, json_schema)
        engine = self.llm.llm_engine
        replies: list[Reply | None] = [None] * len(conversations)
        request_ids: dict[str, int] = {}  # vLLM's internal id ("<id>-<8 random chars>") -> index
        try:
            for i, conversation in enumerate(conversations):  # one by one, so one bad prompt fails alone
                try:
                    (request_id,) = self.llm.enqueue_chat([list(conversation)], params, use_tqdm=False)
                    request_ids[request_id] = i
                except VLLMValidationError as e:
                    if not is_prompt_too_long(e):
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
        except EngineDeadError as e:
            request_ids.clear()  # nothing to abort in a dead engine, and a new one starts when next needed
            self._llm = None
            raise EngineError(f"the vLLM engine for {self.name} died{console.full_log()}") from e
        finally:  # interrupted: leave the engine empty for the next call
            unfinished = [request_id for request_id, i in request_ids.items() if replies[i] is None]
            if unfinished:
                engine.abort_request(unfinished, internal=True)
        return replies  # type: ignore[return-value]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None


def _last_line(error: Exception) -> str:
    """The gist of an engine's error: vLLM's messages end with the cause."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _vllm_reply(completion: Any) -> Reply:
    if completion.logprobs is None:
        return Reply(completion.text, completion.finish_reason or "stop")
    positions = completion.logprobs  # per generated token: token id -> Logprob, the generated one included
    logprobs = [{entry.decoded_token: entry.logprob for entry in position.values()} for position in positions]
    tokens = [position[token].decoded_token for position, token in zip(positions, completion.token_ids)]
    return Reply(completion.text, completion.finish_reason or "stop", logprobs, tokens)


def engine_settings(chosen: Mapping[str, Any]) -> dict[str, Any]:
    """vllm.LLM settings: lift-local's device-aware defaults, overridden by the `chosen` ones.

    JSON replies are compact: with whitespace allowed between JSON tokens, a small model can emit newlines
    and tabs until max_tokens (seen with SmolLM2). That setting is engine-wide in vLLM and needs the
    xgrammar or guidance backend; guidance also covers more of JSON Schema (e.g. maxLength).
    On CPU, `gpu_memory_utilization` would mean a fraction of all RAM (and fail when less is free), so
    the KV cache gets a fixed size instead; eager mode starts in ~30 s instead of ~100 s for ~8% less speed;
    `cpu_engine` adds what measured fastest on the machine's CPU (float32 where it has no bfloat16 compute).
    """
    from vllm.platforms import current_platform

    settings: dict[str, Any] = {
        "max_model_len": 4096,
        "enable_prefix_caching": True,
        "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
    }
    if current_platform.is_cpu():
        settings.update(enforce_eager=True, kv_cache_memory_bytes=2 * 1024**3, **cpu_engine.engine_settings())
    return settings | dict(chosen)


def sampling_params(sampling: Sampling, json_schema: dict[str, Any] | None = None):
    """The `vllm.SamplingParams` of a request: the one place lift-local's sampling becomes vLLM's."""
    from vllm import SamplingParams
    from vllm.platforms import current_platform
    from vllm.sampling_params import StructuredOutputsParams

    return SamplingParams(
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


# One engine per model folder and settings in this process: when rewriter and judge are the same model they
# share it, and CLI commands run in one process (as in the tests) reuse a started engine.
_ENGINES: dict[tuple[str, str], VLLMChat] = {}


def shared_engine(path: Path, name: str, settings: Mapping[str, Any]) -> VLLMChat:
    key = (str(path), json.dumps(settings, sort_keys=True, default=str))
    if key not in _ENGINES:
        _ENGINES[key] = VLLMChat(path, name, **settings)
    return _ENGINES[key]


def close_engines() -> None:
    """Shuts down every engine of this process, freeing its memory (and its CPU or GPU)."""
    for engine in _ENGINES.values():
        engine.close()
