"""Where commands get their models and prompts.

A model is built only when a phase first asks for it (a run whose LLM phases are all unchanged never
starts an engine), and always behind its cache, so every finished reply or embedding is kept at once and a
re-run resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import models
from .embed import Embedder, model_identity
from .errors import ModelError, ParameterError
from .judge.features import HiddenSpec, HiddenStates
from .llm import ChatModel, backend
from .llm.cache import CachedChat
from .params import Params, option
from .phases import Phase
from .prompts import Prompt, load_prompt
from .store import ShardedStore, Store


@dataclasses.dataclass(frozen=True)
class ModelsConfig(Params):
    """Which models play each role of `models.ROLES`: role -> registry names or local folders; a role not
    given takes the registry's choice. Only a role that allows `many` takes several (a jury of judges).

    `server`: the URL of an OpenAI-compatible endpoint (`vllm serve`) that serves the chat roles instead of
    an engine in this process.
    """

    roles: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    server: str | None = None
    embed_batch_size: int = option(32, "Texts per embedding batch.", low=1)
    device: str | None = None  # torch device for the embedder

    def __post_init__(self) -> None:
        super().__post_init__()
        for role, names in self.roles.items():
            if role not in models.ROLES:
                raise ParameterError(type(self).__name__, role, f"is not a role (roles: {', '.join(models.ROLES)})")
            if len(names) > 1 and not models.ROLES[role].many:
                raise ParameterError(type(self).__name__, role, f"takes one model, got {len(names)}: {', '.join(names)}")

    def chosen(self, role: str) -> tuple[str | None, ...]:
        """The models given for `role`; (None,) for the registry's choice."""
        return self.roles.get(role) or (None,)


class Workbench:
    """The `Kit` a phase's map works with on this machine: its models behind their caches, and its prompts.

    `prompts` maps a template name to the user's own file in its place (e.g. {"judge": "my_judge.toml"}).
    `sharded`: this is one of a cluster's replicas, storing into a shard of each cache (see store.py).
    """

    _CACHES = ("replies", "embeddings", "features")

    def __init__(self, cache_dir: Path, models_config: ModelsConfig = ModelsConfig(), prompts: Mapping[str, str] = {},
                 sharded: bool = False):
        self.cache_dir = Path(cache_dir).expanduser()
        self.models = models_config
        self.prompts = dict(prompts)
        self.sharded = sharded
        self._stores: dict[str, Store | ShardedStore] = {}
        self._chats: dict[tuple[str, str | None], CachedChat] = {}
        self._embedder: Embedder | None = None
        self._readers: dict[HiddenSpec, HiddenStates] = {}

    def chat(self, role: str) -> ChatModel:
        return self.chats(role)[0]

    def chats(self, role: str) -> list[ChatModel]:
        """Every model of `role`, in the order given: one, or a jury."""
        for name in self.models.chosen(role):
            if (role, name) not in self._chats:
                model = backend.load_chat_model(role, name, server_url=self.models.server)
                self._chats[role, name] = CachedChat(model, self._store("replies"))
        return [self._chats[role, name] for name in self.models.chosen(role)]

    def replies_asked(self) -> int:
        """How many replies the chat models have given so far (not those taken from the cache)."""
        return sum(model.asked for model in self._chats.values())

    def embedder(self) -> Embedder:
        if self._embedder is None:
            (name,) = self.models.chosen("embedder")
            folder = models.ensure_present(models.resolve("embedder", name))
            self._embedder = Embedder(
                folder, self._store("embeddings"), batch_size=self.models.embed_batch_size, device=self.models.device
            )
        return self._embedder

    def reader(self, spec: HiddenSpec) -> HiddenStates:
        """The hidden states of the model `spec.reader` (a registry name or folder; loaded on first use)."""
        if spec not in self._readers:
            folder = models.ensure_present(models.resolve("reader", spec.reader))
            self._readers[spec] = HiddenStates(folder, spec, self._store("features"))
        return self._readers[spec]

    def digest(self, role: str, name: str | None) -> str:
        """The digest of the weights of `role`'s model `name` (`embed.model_identity`), which a scorer pins."""
        if models.ROLES[role].kind == "chat" and role != "reader" and self.models.server:
            raise ModelError(f"the {role} {name or ''} is served at {self.models.server}: a scorer needs its weights here "
                             "to pin them; use a model of the registry or a local folder")
        return model_identity(models.ensure_present(models.resolve(role, name)))

    def prompt(self, name: str, requires: tuple[str, ...]) -> Prompt:
        return load_prompt(self.prompts.get(name, name), requires=requires)

    def phase_prompts(self, phase: Phase) -> list[Prompt]:
        """The phase's templates, loaded: a bad one fails here, before any model starts."""
        return [self.prompt(name, phase.requires) for name in phase.templates().values()]

    def identities(self, roles: Iterable[str]) -> dict[str, str]:
        """What names the models of `roles` in the manifest, without starting anything."""
        wanted = set(roles)  # once: `roles` may be a generator
        return {role: self._identity(role) for role in models.ROLES if role in wanted}

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

        chosen = {role: tuple(map(absolute, names)) for role, names in self.models.roles.items()}
        return {"cache_dir": self.cache_dir.resolve(), "models_config": dataclasses.replace(self.models, roles=chosen),
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
        """The names of the role's models ("a + b" for a jury), or the served model's."""
        names = self.models.chosen(role)
        if models.ROLES[role].kind == "chat" and self.models.server:
            return " + ".join(f"{name or 'served model'} at {self.models.server}" for name in names)
        return " + ".join(models.resolve(role, name).name for name in names)

    def _store(self, name: str) -> Store | ShardedStore:
        if name not in self._stores:
            path = self.cache_dir / f"{name}.sqlite"
            if self.sharded:
                self._stores[name] = ShardedStore(path, name)
            else:
                self._stores[name] = Store(path, name)
                self._stores[name].absorb()  # what replicas of a cluster run stored, e.g. one interrupted
        return self._stores[name]
