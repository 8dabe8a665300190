"""A client of an OpenAI-compatible server (`vllm serve`) on the user's own network."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from ..errors import ModelError, ServerError
from . import PROMPT_TOO_LONG, Conversation, OnReply, Reply, Sampling, is_prompt_too_long

DEFAULT_SERVER_URL = "http://127.0.0.1:8000/v1"


class ServerChat:
    """A client of an OpenAI-compatible server (`vllm serve`) at an address the user gives.

    Up to `max_concurrency` requests are in flight at once, so the server can batch them; failed requests
    (connection errors, 429, 5xx) are retried with exponential back-off by the openai client. The base URL
    and key are passed explicitly and proxies from the environment are ignored, so no OPENAI_* or proxy
    variable can send data anywhere else. `model` is the served model name; by default the server's only one.

    A server that still fails after the retries (down, refusing, answering 5xx) is a ServerError naming it.
    Requests carry no seed: vLLM on CPU kills its engine on a seeded request once a prefill is chunked
    ("CPU Generator does not use offset"), and a client cannot tell a CPU server from a GPU one. The reply
    cache keeps re-runs reproducible instead.
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
            raise ModelError(f"cannot list the models served at {self.base_url}: {e}") from e
        if len(served) != 1:
            raise ModelError(
                f"{self.base_url} serves {len(served)} models ({', '.join(served) or 'none'}); name one of them"
            )
        return served[0]

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling, json_schema: dict[str, Any] | None = None,
             on_reply: OnReply | None = None, label: str = "") -> list[Reply]:
        import openai

        replies: list[Reply | None] = [None] * len(conversations)
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="lift-local-chat")
        try:
            futures = {pool.submit(self._one, c, sampling, json_schema): i for i, c in enumerate(conversations)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    replies[i] = future.result()
                except openai.APIError as e:
                    raise ServerError(f"the server at {self.base_url} failed: {_why(e)}") from e
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
                **extra,
            )
        except openai.BadRequestError as e:
            if not is_prompt_too_long(e):
                raise
            return Reply("", PROMPT_TOO_LONG)
        choice = response.choices[0]
        logprobs = tokens = None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            positions = choice.logprobs.content
            logprobs = [{top.token: top.logprob for top in position.top_logprobs} for position in positions]
            tokens = [position.token for position in positions]
        return Reply(choice.message.content or "", choice.finish_reason or "stop", logprobs, tokens)


def _why(error: Exception) -> str:
    """An openai error in a few words: what the server answered, or why it could not be reached."""
    import openai

    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error.message}"
    if isinstance(error, openai.APITimeoutError):
        return "no answer in time"
    cause = error.__cause__ or error.__context__
    return f"cannot reach it ({cause or error})"
