"""Where commands get their models and prompts.

A model is built only when a phase first asks for it (a run whose LLM phases are all unchanged never
starts an engine), and always behind its cache, so every finished reply or embedding is kept at once and a
re-run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import llm, models
from .embed import Embedder
from .llm import ChatModel
from .llm.cache import CachedChat
from .phases import Phase
from .prompts import Prompt, load_prompt
from .store import Store


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


class Workbench:
    """The `Kit` a phase's map works with on this machine: its models behind their caches, and its prompts.

    `prompts` maps a template name to the user's own file in its place (e.g. {"judge": "my_judge.toml"}).
    """

    def __init__(self, cache_dir: Path, models_config: ModelsConfig = ModelsConfig(), prompts: Mapping[str, str] = {}):
        self.cache_dir = Path(cache_dir).expanduser()
        self.models = models_config
        self.prompts = dict(prompts)
        self._stores: dict[str, Store] = {}
        self._built: dict[str, Any] = {}

    def chat(self, role: str) -> ChatModel:
        if role not in self._built:
            model = llm.load_chat_model(role, getattr(self.models, role), server_url=self.models.server)
            self._built[role] = CachedChat(model, self._store("replies"))
        return self._built[role]

    def replies_asked(self) -> int:
        """How many replies the chat models have given so far (not those taken from the cache)."""
        return sum(model.asked for role, model in self._built.items() if role != "embedder")

    def embedder(self) -> Embedder:
        if "embedder" not in self._built:
            folder = models.ensure_present(models.resolve("embedder", self.models.embedder))
            self._built["embedder"] = Embedder(
                folder, self._store("embeddings"), batch_size=self.models.embed_batch_size, device=self.models.device
            )
        return self._built["embedder"]

    def prompt(self, name: str, requires: tuple[str, ...]) -> Prompt:
        return load_prompt(self.prompts.get(name, name), requires=requires)

    def phase_prompts(self, phase: Phase) -> list[Prompt]:
        """The phase's templates, loaded: a bad one fails here, before any model starts."""
        return [self.prompt(name, phase.requires) for name in phase.templates().values()]

    def identities(self) -> dict[str, str]:
        """What names each role's model in the manifest, without starting anything."""
        return {role: self._identity(role) for role in models.ROLES}

    def fingerprint_inputs(self, phase: Phase) -> dict[str, Any]:
        """Everything besides its parameters and input records that decides a phase's output."""
        prompts = {p.source: hashlib.sha256(f"{p.system}\0{p.user}\0{p.input_block}".encode()).hexdigest()
                   for p in self.phase_prompts(phase)}
        return {"models": {role: self._identity(role) for role in phase.roles}, "prompts": prompts}

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

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
