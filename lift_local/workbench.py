"""Where commands get their models and prompts.

A model is built only when a phase first asks for it (a run whose LLM phases are all unchanged never
starts an engine), and always behind its cache, so every finished reply or embedding is kept at once and a
re-run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from . import llm, models
from .embed import Embedder
from .llm import CachedChat, ChatModel
from .prompts import Prompt, load_prompt
from .quality import PROMPT_FIELDS
from .store import Store

# Which templates each phase uses, by their names in `PromptsConfig`.
PHASE_PROMPTS = {"enhance": ("enhance",), "expand": ("expand_{task}", "enhance"), "quality": ("judge",), "variety": ()}


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """Which model plays each role: a registry name or a local folder (None: the registry's choice).

    `server`: the URL of an OpenAI-compatible endpoint (`vllm serve`) that serves the rewriter and judge
    instead of an engine in this process.
    """

    rewriter: str | None = None
    judge: str | None = None
    embedder: str | None = None
    server: str | None = None
    embed_batch_size: int = 32
    device: str | None = None  # torch device for the embedder


@dataclasses.dataclass(frozen=True)
class PromptsConfig:
    """The template for each job: a bundled name or the path of the user's own TOML file."""

    enhance: str = "enhance"
    expand_nlu: str = "expand_nlu"
    expand_code: str = "expand_code"
    judge: str = "judge"


class Workbench:
    def __init__(
        self,
        cache_dir: Path,
        models_config: ModelsConfig = ModelsConfig(),
        prompts_config: PromptsConfig = PromptsConfig(),
    ):
        self.cache_dir = Path(cache_dir).expanduser()
        self.models = models_config
        self.prompts = prompts_config
        self._stores: dict[str, Store] = {}
        self._built: dict[str, Any] = {}

    def rewriter(self) -> ChatModel:
        return self._chat("rewriter")

    def judge(self) -> ChatModel:
        return self._chat("judge")

    def embedder(self) -> Embedder:
        if "embedder" not in self._built:
            folder = models.ensure_present(models.resolve("embedder", self.models.embedder))
            self._built["embedder"] = Embedder(
                folder, self._store("embeddings"), batch_size=self.models.embed_batch_size, device=self.models.device
            )
        return self._built["embedder"]

    def prompt(self, name: str) -> Prompt:
        source = getattr(self.prompts, name)
        return load_prompt(source, requires=PROMPT_FIELDS if name == "judge" else ("instruction",))

    def phase_prompts(self, phase: str, params: Any) -> list[Prompt]:
        names = [name.format(task=getattr(params, "task", "")) for name in PHASE_PROMPTS[phase]]
        return [self.prompt(name) for name in names]

    def identities(self) -> dict[str, str]:
        """What names each role's model in the manifest, without starting anything."""
        return {role: self._identity(role) for role in models.ROLES}

    def fingerprint_inputs(self, phase: str, params: Any) -> dict[str, Any]:
        """Everything besides its parameters and input records that decides a phase's output."""
        role = {"enhance": "rewriter", "expand": "rewriter", "variety": "embedder", "quality": "judge"}[phase]
        prompts = {p.source: hashlib.sha256(f"{p.system}\0{p.user}\0{p.input_block}".encode()).hexdigest()
                   for p in self.phase_prompts(phase, params)}
        return {"model": self._identity(role), "prompts": prompts}

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def _chat(self, role: str) -> ChatModel:
        if role not in self._built:
            model = llm.load_chat_model(role, getattr(self.models, role), server_url=self.models.server)
            self._built[role] = CachedChat(model, self._store("replies"), label=role)
        return self._built[role]

    def _identity(self, role: str) -> str:
        override = getattr(self.models, role)
        if role != "embedder" and self.models.server:
            return f"{override or 'served model'} at {self.models.server}"
        spec = models.resolve(role, override)
        return spec.name

    def _store(self, name: str) -> Store:
        if name not in self._stores:
            self._stores[name] = Store(self.cache_dir / f"{name}.sqlite", name)
        return self._stores[name]
