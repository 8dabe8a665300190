"""Run configuration: every phase's parameter object, set from a TOML file and `--set phase.key=value`.

The TOML sections are the phase names, `[models]`, `[prompts]` and `[run]`; a phase's keys are the fields of its
parameter dataclass, so the config and the Python API can never drift apart.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .phases import Phase, all_phases
from .prompts import bundled_names
from .workbench import ModelsConfig


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """The `[run]` keys that send a run's per-record work to a Ray cluster (docs/ray.md); without `ray`, the
    run stays in this process.

    `ray`: the cluster's address as `ray.init` takes it: "auto" (the cluster this machine belongs to, or
    RAY_ADDRESS), "HOST:PORT", "ray://HOST:10001" (Ray Client), or "local" (a new one-machine cluster).
    Each replica is one actor holding one engine (or the embedder) with `gpus_per_replica` GPUs: the
    product of the model's tensor and pipeline parallel sizes (its `vllm` settings).
    """

    ray: str | None = None
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    batch_size: int = 256  # records per batch a replica gets at once; its engine batches them continuously

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.gpus_per_replica < 0 or self.cpus_per_replica < 0:
            raise ValueError("gpus_per_replica and cpus_per_replica must not be negative")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    phases: list[Phase]  # every phase in run order, each with its parameters
    models: ModelsConfig = ModelsConfig()
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)  # template name -> the user's file
    skip: frozenset[str] = frozenset()
    cluster: ClusterConfig = ClusterConfig()
    license: str | None = None  # of the curated data, for its dataset card (`[run] license`, `--license`)


def load_config(path: Path | None = None, overrides: typing.Iterable[str] = (), skip: typing.Iterable[str] = (),
                run: typing.Mapping[str, Any] = {}) -> RunConfig:
    """Defaults (the paper's), then the TOML file, then `section.key=value` overrides, then `run` (the
    command line's own [run] options, such as --ray), in that order."""
    where = str(path) if path else "--set"
    sections: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            sections = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for override in overrides:
        section, key, value = _split_override(override)
        sections.setdefault(section, {})[key] = value
    sections.setdefault("run", {}).update(run)
    names = [cls.name for cls in all_phases()]
    skipped = set(skip) | set(_skip_list(sections, where))
    license = _license(sections, where)
    for name in skipped:
        if name not in names:
            raise ConfigError(f"{where}: cannot skip unknown phase '{name}' (phases: {', '.join(names)})")
    for extra in set(sections) - set(names) - {"models", "prompts", "run"}:
        known = ", ".join((*names, "models", "prompts", "run"))
        raise ConfigError(f"{where}: unknown section [{extra}] (sections: {known})")
    cluster = _build(ClusterConfig, sections.get("run", {}), f"{where} [run]")
    phases = [cls(_build(cls.Params, sections.get(cls.name, {}), f"{where} [{cls.name}]")) for cls in all_phases()]
    models = _build(ModelsConfig, sections.get("models", {}), f"{where} [models]")
    prompts = sections.get("prompts", {})
    for name, value in prompts.items():
        if name not in bundled_names():
            raise ConfigError(f"{where} [prompts]: unknown key '{name}' (known: {', '.join(bundled_names())})")
        if not isinstance(value, str):
            raise ConfigError(f"{where} [prompts]: '{name}' must be a string, got {value!r}")
    used = {phase.name: sorted(set(phase.templates().values())) for phase in phases if phase.prompts}
    for name in prompts:  # e.g. a judge prompt given while quality judges with judge_digits (expected scores)
        if not any(name in templates for templates in used.values()):
            uses = "; ".join(f"{phase}: {', '.join(templates)}" for phase, templates in used.items())
            raise ConfigError(f"{where} [prompts]: '{name}' is not used with these phase parameters ({uses})")
    return RunConfig(phases=phases, models=models, prompts=prompts, skip=frozenset(skipped), cluster=cluster,
                     license=license)


def _split_override(text: str) -> tuple[str, str, Any]:
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. quality.top=500")
    try:  # a TOML value (number, boolean, quoted string, list); anything else is taken as a bare string
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def _skip_list(sections: dict, where: str) -> list[str]:
    value = sections.get("run", {}).pop("skip", [])
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{where}: [run] skip must be a list of phase names, got {value!r}")
    return names


def _license(sections: dict, where: str) -> str | None:
    """`[run] license`: a licence id as the Hugging Face Hub knows them (apache-2.0, cc-by-nc-4.0, other, ...)."""
    value = sections.get("run", {}).pop("license", None)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        raise ConfigError(f"{where}: [run] license must be a licence id such as apache-2.0 or cc-by-nc-4.0 "
                          f"(https://huggingface.co/docs/hub/repositories-licenses), got {value!r}")
    return value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(fields)})")
        if not _has_type(value, hints[key]):
            raise ConfigError(f"{where}: '{key}' must be {_type_name(hints[key])}, got {value!r}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def _has_type(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a TOML list
        return isinstance(value, list) and all(_has_type(item, typing.get_args(hint)[0]) for item in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "unset"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )
