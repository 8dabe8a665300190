"""A vLLM engine in this process: the default backend, on CPU or GPU, of chat models and of readers of hidden states."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .. import console, cpu_engine, lifeline
from ..errors import EngineError
from . import PROMPT_TOO_LONG, Conversation, OnReply, Reply, Sampling, is_prompt_too_long


class VLLMEngine:
    """A vLLM engine in this process, started on first use (`llm`).

    Starting it shuts down any other engine of this process: the phases use one model at a time, and two
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
                # the engine's processes start in here, and have read the model's folder once started
                with cpu_engine.engine_environment_applied(), self._folder() as folder:
                    self._llm = LLM(model=str(folder), **engine_settings(self.settings))
            except Exception as e:
                raise EngineError(f"the vLLM engine for {self.name} failed to start: {_last_line(e)}"
                                  f"{console.full_log()}") from e
        return self._llm

    def _folder(self) -> contextlib.AbstractContextManager[Path]:
        """The model folder the engine starts from."""
        return contextlib.nullcontext(self.path)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.llm_engine.engine_core.shutdown()
            self._llm = None

    def _died(self) -> EngineError:
        """The error for an engine that died; a new one starts when next needed."""
        self._llm = None
        return EngineError(f"the vLLM engine for {self.name} died{console.full_log()}")


class VLLMChat(VLLMEngine):
    """A chat model on a vLLM engine in this process. The whole batch is queued at once so the engine
    schedules it continuously; each reply is handed to `on_reply` the moment it finishes, so nothing waits
    for the slowest request before it can be stored. The engine starts on the first request, so a run
    answered wholly from the cache never starts one.
    """

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
            request_ids.clear()  # nothing to abort in a dead engine
            raise self._died() from e
        finally:  # interrupted: leave the engine empty for the next call
            unfinished = [request_id for request_id, i in request_ids.items() if replies[i] is None]
            if unfinished:
                engine.abort_request(unfinished, internal=True)
        return replies  # type: ignore[return-value]


class VLLMStates(VLLMEngine):
    """The hidden states of a causal LM's tokens after its first layers, through vLLM's pooling runner: one
    forward pass a prompt, no generation (`states_settings` sets the engine up)."""

    @contextlib.contextmanager
    def _folder(self) -> Iterator[Path]:
        """A temporary copy of the model's folder without the weights of the layers the engine does not build:
        vLLM's loader refuses them ("There is no module or parameter named 'layers.15' in LlamaModel")."""
        with tempfile.TemporaryDirectory(prefix=f"lift-local-{self.path.name}-") as tmp:
            cut_weights(self.path, Path(tmp), self.settings["hf_overrides"]["num_hidden_layers"])
            yield Path(tmp)

    def states(self, prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Each prompt's (tokens x hidden size) float32 states; a prompt is token ids."""
        from vllm import PoolingParams, TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            outputs = self.llm.encode([TokensPrompt(prompt_token_ids=list(prompt)) for prompt in prompts],
                                      PoolingParams(use_activation=False), pooling_task="token_embed", use_tqdm=False)
        except EngineDeadError as e:
            raise self._died() from e
        return [output.outputs.data.float().numpy() for output in outputs]


def cut_weights(source: Path, target: Path, layers: int) -> None:
    """`source`'s model folder in `target` (its other files linked) with the weights of its first `layers`
    decoder layers and of what is below them: not those above, nor the language-model head."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    for file in sorted(source.glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            for key in weights.keys():
                layer = _LAYER.search(key)
                if (layer is None or int(layer.group(1)) < layers) and not key.startswith("lm_head."):
                    tensors[key] = weights.get_tensor(key)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    for file in source.iterdir():
        if file.suffix != ".safetensors" and file.name != "model.safetensors.index.json":
            (target / file.name).symlink_to(file.resolve())


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def states_settings(path: Path, layers: int) -> dict[str, Any]:
    """vllm.LLM settings of an engine that reads the states after the model's first `layers` layers.

    The layers above are never built (`hf_overrides`) or loaded (`VLLMStates` starts from a copy of the
    folder without them), so a middle layer costs half a forward pass. vLLM's model ends in its final norm
    whatever its depth: each token's state is that layer's output under the final norm, as the model would
    have normed it had it ended there, not the raw residual stream that transformers' `hidden_states[layers]`
    holds (docs/judges.md: the scorer agrees with GPT-4 as well). Every token's state comes back as it is
    (`ALL`, no activation); prefix caching is off, as a cached prefix's tokens would have no state.
    """
    config = json.loads((Path(path) / "config.json").read_text())
    overrides: dict[str, Any] = {"num_hidden_layers": layers}
    if config.get("layer_types"):
        overrides["layer_types"] = config["layer_types"][:layers]
    return {"runner": "pooling", "hf_overrides": overrides, "enable_prefix_caching": False,
            "pooler_config": {"task": "token_embed", "tok_pooling_type": "ALL", "use_activation": False}}


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
_ENGINES: dict[tuple[str, str], VLLMEngine] = {}
E = TypeVar("E", bound=VLLMEngine)


def shared_engine(path: Path, name: str, settings: Mapping[str, Any], kind: type[E] = VLLMChat) -> E:
    key = (str(path), json.dumps(settings, sort_keys=True, default=str))
    if key not in _ENGINES:
        _ENGINES[key] = kind(path, name, **settings)
    return _ENGINES[key]  # type: ignore[return-value]


def close_engines() -> None:
    """Shuts down every engine of this process, freeing its memory (and its CPU or GPU)."""
    for engine in _ENGINES.values():
        engine.close()
