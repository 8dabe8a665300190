"""Every parameter's limits hold wherever its value comes from: Python, the phase's command line, the TOML
config and `--set`. The tests walk every declared parameter, so a new phase or parameter is covered as
soon as it declares its limits."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from click.testing import CliRunner

from lift_local.cli import main
from lift_local.config import ClusterConfig, load_config
from lift_local.errors import ConfigError, ParameterError
from lift_local.params import limits
from lift_local.phases import all_phases
from lift_local.workbench import ModelsConfig

# Values that a parameter's own `check` refuses, with what the message says; every checked parameter needs one.
CHECKED = {
    ("quality", "top"): [(0, "must be a count of at least 1 or a fraction in (0, 1]"),
                         (1.5, "must be a count of at least 1 or a fraction in (0, 1]")],
    ("decontaminate", "benchmarks"): [("gsm8k,hellaswag", "unknown benchmark(s) hellaswag")],
}
# The sections of the run config that are not phases, with their dataclasses.
RUN_SECTIONS = {"run": ClusterConfig, "models": ModelsConfig}


def bad_values(section: str, field: dataclasses.Field, hint) -> list[tuple[object, str]]:
    """Values just outside the field's limits, each with the words its error must contain."""
    allowed = limits(field)
    values = []
    if allowed is not None:
        low, high = field.metadata["low"], field.metadata["high"]
        step = 1 if hint is int else 0.5
        if low is not None:
            values.append((low if field.metadata["low_open"] else low - step, f"must be {allowed}"))
        if high is not None:
            values.append((high + step, f"must be {allowed}"))
        if hint is float:
            values.append((math.nan, f"must be {allowed}"))
    if typing.get_origin(hint) is typing.Literal:
        values.append(("nope", "must be one of " + ", ".join(map(repr, typing.get_args(hint)))))
    if field.metadata.get("check") is not None:
        assert (section, field.name) in CHECKED, f"{section}.{field.name} has a check: add a bad value to CHECKED"
        values += CHECKED[section, field.name]
    return values


def cases(sections: dict[str, type]) -> list:
    found = []
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if field.init:
                found += [pytest.param(section, cls, field, value, words, id=f"{section}.{field.name}={value!r}")
                          for value, words in bad_values(section, field, hints[field.name])]
    return found


PHASE_CASES = cases({cls.name: cls.Params for cls in all_phases()})
RUN_CASES = cases(RUN_SECTIONS)


def toml_value(value) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)


def test_every_numeric_parameter_of_every_phase_has_limits():
    """Numbers mean something bounded (similarities, shares, counts): each declares its range, seeds included."""
    unbounded = [f"{cls.name}.{field.name}" for cls in all_phases() for field in dataclasses.fields(cls.Params)
                 if field.init and typing.get_type_hints(cls.Params)[field.name] in (int, float)
                 and limits(field) is None]
    assert unbounded == []


@pytest.mark.parametrize("section, cls, field, value, words", PHASE_CASES + RUN_CASES)
def test_python_refuses_values_outside_the_limits(section, cls, field, value, words):
    with pytest.raises(ParameterError, match=f"^{cls.__name__}.{field.name} ") as raised:
        cls(**{field.name: value})
    assert raised.value.name == field.name and words in str(raised.value)


@pytest.mark.parametrize("section, cls, field, value, words", PHASE_CASES + RUN_CASES)
def test_the_config_file_refuses_values_outside_the_limits(tmp_path, section, cls, field, value, words):
    path = tmp_path / "lift.toml"
    path.write_text(f"[{section}]\n{field.name} = {toml_value(value)}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path} [{section}] {field.name}: {words}")


@pytest.mark.parametrize("section, cls, field, value, words", PHASE_CASES + RUN_CASES)
def test_set_refuses_values_outside_the_limits(tmp_path, section, cls, field, value, words):
    path = tmp_path / "lift.toml"
    path.write_text(f"[{section}]\n")  # the file does not give the value: the message must name --set
    override = f"{section}.{field.name}={toml_value(value)}"
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides=[override])
    assert str(raised.value).startswith(f"--set {override}: {words}")


@pytest.mark.parametrize("section, cls, field, value, words", PHASE_CASES)
def test_the_phase_command_refuses_values_outside_the_limits(tmp_path, section, cls, field, value, words):
    option = f"--{field.name.replace('_', '-')}"
    required = [f"--{other.name}={other.default}" for other in dataclasses.fields(cls)
                if other.metadata.get("required") and other is not field]  # e.g. expand's --task
    result = CliRunner().invoke(main, [section, str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"),
                                       "--cache-dir", str(tmp_path), *required, option, str(value)])
    if typing.get_origin(typing.get_type_hints(cls)[field.name]) is typing.Literal:  # a choice, which Click lists
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    else:
        assert result.exit_code == 1, result.output
        assert f"Error: {option}: {words}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.jsonl").exists()


def test_run_refuses_a_value_outside_the_limits_with_exit_1(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "run"),
                                       "--set", "dedup.near=1.5"])
    assert result.exit_code == 1
    assert "Error: --set dedup.near=1.5: must be in [0, 1], got 1.5" in result.output
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_the_embedders_batch_size_option_is_checked_by_its_declaration(tmp_path):
    result = CliRunner().invoke(main, ["variety", str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"),
                                       "--cache-dir", str(tmp_path), "--batch-size", "0"])
    assert result.exit_code == 1 and "Error: --batch-size: must be at least 1, got 0" in result.output


def test_runs_replicas_option_is_checked_by_its_declaration(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(main, ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "run"),
                                       "--ray", "local", "--replicas", "0"])
    assert result.exit_code == 1 and "Error: --replicas: must be at least 1, got 0" in result.output


def test_a_jury_is_only_for_the_judge():
    assert ModelsConfig(roles={"judge": ("a", "b")}).chosen("judge") == ("a", "b")
    with pytest.raises(ParameterError, match="rewriter takes one model, got 2: a, b"):
        ModelsConfig(roles={"rewriter": ("a", "b")})
    with pytest.raises(ConfigError, match=r"--set models.rewriter=\['a', 'b'\]: takes one model, got 2"):
        load_config(overrides=["models.rewriter=['a', 'b']"])
