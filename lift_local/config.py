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

from . import models
from .errors import ConfigError, ParameterError
from .params import Params, option
from .phases import Phase, all_phases
from .prompts import bundled_names
from .workbench import ModelsConfig


@dataclasses.dataclass(frozen=True)
class ClusterConfig(Params):
    """The `[run]` keys that send a run's per-record work to a Ray cluster (docs/ray.md); without `ray`, the
    run stays in this process.

    `ray`: the cluster's address as `ray.init` takes it: "auto" (the cluster this machine belongs to, or
    RAY_ADDRESS), "HOST:PORT", "ray://HOST:10001" (Ray Client), or "local" (a new one-machine cluster).
    Each replica is one actor holding one engine (or the embedder) with `gpus_per_replica` GPUs: the
    product of the model's tensor and pipeline parallel sizes (its `vllm` settings).
    """

    ray: str | None = None
    replicas: int = option(1, "Replicas working at once.", low=1)
    gpus_per_replica: float = option(0.0, "GPUs each replica holds.", low=0)
    cpus_per_replica: float = option(1.0, "CPUs each replica holds.", low=0)
    batch_size: int = option(
        256, "Records per batch a replica gets at once; its engine batches them continuously.", low=1
    )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    phases: list[Phase]  # every phase in run order, each with its parameters
    models: ModelsConfig = ModelsConfig()
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)  # template name -> the user's file
    skip: frozenset[str] = frozenset()
    cluster: ClusterConfig = ClusterConfig()
    license: str | None = None  # of the curated data, for its dataset card (`[run] license`, `--license`)


def load_config(path: Path | None = None, overrides: typing.Iterable[str] = (), skip: typing.Iterable[str] = (),
                given: typing.Mapping[tuple[str, str], tuple[str, Any]] = {}) -> RunConfig:
    """Defaults (the paper's), then the TOML file, then `section.key=value` overrides, then `given`: the
    command line's own options, (section, key) -> (option, value), e.g. ("run", "ray") -> ("--ray", "auto")."""
    where = str(path) if path else "--set"
    sections: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            sections = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot be read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
    # Where each value came from, for messages: "lift.toml [dedup] near", "--set dedup.near=1.5", "--ray".
    sources = {(section, key): f"{path} [{section}] {key}" for section, values in sections.items()
               if isinstance(values, dict) for key in values}
    for override in overrides:
        section, key, value = _split_override(override)
        sections.setdefault(section, {})[key] = value
        sources[section, key] = f"--set {override}"
    for (section, key), (flag, value) in given.items():
        sections.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
        sources[section, key] = flag
    names = [cls.name for cls in all_phases()]
    skipped = set(skip) | set(_skip_list(sections, where))
    license = _license(sections, sources, where)
    for name in skipped:
        if name not in names:
            raise ConfigError(f"{where}: cannot skip unknown phase '{name}' (phases: {', '.join(names)})")
    for extra in set(sections) - set(names) - {"models", "prompts", "run"}:
        known = ", ".join((*names, "models", "prompts", "run"))
        raise ConfigError(f"{where}: unknown section [{extra}] (sections: {known})")
    cluster = _build(ClusterConfig, "run", sections.get("run", {}), sources, where)
    phases = [cls(_build(cls.Params, cls.name, sections.get(cls.name, {}), sources, where)) for cls in all_phases()]
    chosen = _models_config(sections.get("models", {}), sources, where)
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
    return RunConfig(phases=phases, models=chosen, prompts=prompts, skip=frozenset(skipped), cluster=cluster,
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


def _license(sections: dict, sources: dict[tuple[str, str], str], where: str) -> str | None:
    """`[run] license`: a licence id as the Hugging Face Hub knows them (apache-2.0, cc-by-nc-4.0, other, ...)."""
    value = sections.get("run", {}).pop("license", None)
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value)):
        source = sources.get(("run", "license"), f"{where} [run] license")
        raise ConfigError(f"{source}: must be a licence id such as apache-2.0 or cc-by-nc-4.0 "
                          f"(https://huggingface.co/docs/hub/repositories-licenses), got {value!r}")
    return value


def _models_config(values: dict[str, Any], sources: dict[tuple[str, str], str], where: str) -> ModelsConfig:
    """[models]: a key per role (a model name or folder, or a list of them for a jury), and the other keys of
    `ModelsConfig`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: [models] must be a table of keys, got {values!r}")
    values, roles = dict(values), {}
    for role in [key for key in values if key in models.ROLES]:
        value = values.pop(role)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
            source = sources.get(("models", role), f"{where} [models] {role}")
            raise ConfigError(f"{source}: must be a model name or folder, or a list of them, got {value!r}")
        roles[role] = tuple(names)
    return _build(ModelsConfig, "models", values, sources, where, roles=roles)


def _build(cls: type, section: str, values: dict[str, Any], sources: dict[tuple[str, str], str], where: str,
           **given: Any) -> Any:
    """The section's dataclass from its values (and `given`); a bad value is an error naming where it came from."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: [{section}] must be a table of keys, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init and field.name not in given}
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        source = sources.get((section, key), f"{where} [{section}] {key}")
        if key not in fields:
            known = [*(models.ROLES if section == "models" else ()), *fields]
            given = source if source.startswith("--") else f"{where} [{section}]"  # an option, or the file's table
            raise ConfigError(f"{given}: unknown key '{key}' (known: {', '.join(known)})")
        if not _has_type(value, hints[key]):
            raise ConfigError(f"{source}: must be {_type_name(hints[key])}, got {value!r}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    try:
        return cls(**values, **given)
    except ParameterError as err:
        source = sources.get((section, err.name), f"{where} [{section}] {err.name}")
        raise ConfigError(f"{source}: {err.problem}") from None


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
