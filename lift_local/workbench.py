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
from .store import ShardedStore, Store


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


# The roles a run's phases use (`student` is `lift-local ab`'s own).
_ROLES = tuple(role for role in models.ROLES if role in {field.name for field in dataclasses.fields(ModelsConfig)})


class Workbench:
    """The `Kit` a phase's map works with on this machine: its models behind their caches, and its prompts.

    `prompts` maps a template name to the user's own file in its place (e.g. {"judge": "my_judge.toml"}).
    `sharded`: this is one of a cluster's replicas, storing into a shard of each cache (see store.py).
    """

    _CACHES = ("replies", "embeddings")

    def __init__(self, cache_dir: Path, models_config: ModelsConfig = ModelsConfig(), prompts: Mapping[str, str] = {},
                 sharded: bool = False):
        self.cache_dir = Path(cache_dir).expanduser()
        self.models = models_config
        self.prompts = dict(prompts)
        self.sharded = sharded
        self._stores: dict[str, Store | ShardedStore] = {}
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
        return {role: self._identity(role) for role in _ROLES}

    def fingerprint_inputs(self, phase: Phase) -> dict[str, Any]:
        """Everything besides its parameters and input records that decides a phase's output."""
        prompts = {p.source: hashlib.sha256(f"{p.system}\0{p.user}\0{p.input_block}".encode()).hexdigest()
                   for p in self.phase_prompts(phase)}
        return {"models": {role: self._identity(role) for role in phase.roles}, "prompts": prompts}

    def absorb_shards(self) -> None:
        """Fold the cluster replicas' cache shards into the caches."""
        for name in self._CACHES:
            self._store(name).absorb()

    def portable(self) -> dict[str, Any]:
        """What builds the same Workbench on another machine of a cluster: absolute paths (its working
        folder differs), which must be the same on every machine (a shared folder)."""
        def absolute(value: str | None) -> str | None:
            return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

        chosen = {role: absolute(getattr(self.models, role)) for role in _ROLES}
        return {"cache_dir": self.cache_dir.resolve(), "models_config": dataclasses.replace(self.models, **chosen),
                "prompts": {name: absolute(path) for name, path in self.prompts.items()}}

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

    def _store(self, name: str) -> Store | ShardedStore:
        if name not in self._stores:
            path = self.cache_dir / f"{name}.sqlite"
            if self.sharded:
                self._stores[name] = ShardedStore(path, name)
            else:
                self._stores[name] = Store(path, name)
                self._stores[name].absorb()  # what replicas of a cluster run stored, e.g. one interrupted
        return self._stores[name]
