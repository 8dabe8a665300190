"""The model registry: roles, user registries, overrides, and clear errors for what is missing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lift_local import llm, models
from lift_local.llm import inprocess
from lift_local.llm.inprocess import close_engines
from lift_local.cli import main


def model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def user_registry(tmp_path, monkeypatch):
    """A user registry file (initially absent) that load_registry reads after the packaged one."""
    path = tmp_path / "config" / "registry.toml"
    path.parent.mkdir()
    monkeypatch.setenv("LIFT_LOCAL_REGISTRY", str(path))
    return path


def test_packaged_registry_names_every_role(user_registry):
    registry = models.load_registry()
    assert registry.files == (models.packaged_registry_path(),)
    assert {models.resolve(role).kind for role in ("rewriter", "judge")} == {"chat"}
    embedder = models.resolve("embedder")
    assert embedder.kind == "embedding" and embedder.present  # the packaged sentence-transformers folder


def test_packaged_chat_model_converts_into_the_weights_folder(user_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_LOCAL_WEIGHTS", str(tmp_path / "weights"))
    spec = models.resolve("judge")
    assert spec.gguf is not None and spec.gguf.is_file()
    assert spec.path == tmp_path / "weights" / spec.name
    assert not spec.present


def test_user_registry_adds_a_model_and_reassigns_a_role(user_registry, tmp_path):
    model_folder(tmp_path / "config" / "qwen-7b")
    write(
        user_registry,
        """
        [roles]
        judge = "qwen-7b"

        [models.qwen-7b]
        path = "qwen-7b"
        vllm = { max_model_len = 8192, tensor_parallel_size = 2 }
        """,
    )
    judge = models.resolve("judge")
    assert judge.name == "qwen-7b"
    assert judge.path == tmp_path / "config" / "qwen-7b"  # relative to the registry file
    assert judge.present
    assert judge.vllm == {"max_model_len": 8192, "tensor_parallel_size": 2}
    assert models.resolve("rewriter").name == "smollm2-135m-instruct"  # untouched roles keep the default


def test_override_by_folder_needs_no_registration(user_registry, tmp_path):
    folder = model_folder(tmp_path / "my-judge")
    spec = models.resolve("judge", str(folder))
    assert (spec.name, spec.kind, spec.path) == (str(folder), "chat", folder)
    assert models.ensure_present(spec) == folder


def test_override_by_registered_name(user_registry):
    assert models.resolve("judge", "all-minilm-l6-v2").name == "all-minilm-l6-v2"


def test_unknown_name_lists_the_registered_ones(user_registry):
    with pytest.raises(models.ModelError, match="unknown model 'gpt-9'.*smollm2-135m-instruct"):
        models.resolve("judge", "gpt-9")


def test_missing_model_folder_is_a_clear_error(user_registry, tmp_path):
    spec = models.resolve("judge", str(tmp_path / "nowhere"))
    with pytest.raises(models.ModelError, match=r"folder .*nowhere does not exist"):
        models.ensure_present(spec)


def test_folder_without_config_is_a_clear_error(user_registry, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.ModelError, match="has no config.json"):
        models.ensure_present(models.resolve("judge", str(tmp_path / "empty")))


def test_missing_package_is_reported_not_crashed_on(user_registry):
    write(
        user_registry,
        """
        [models.gone]
        package = "no_such_package_for_lift_local"
        gguf = "x.gguf"
        """,
    )
    spec = models.load_registry().models["gone"]
    assert not spec.present
    with pytest.raises(models.ModelError, match="package no_such_package_for_lift_local is not installed"):
        models.ensure_present(spec)


def test_load_chat_model_fails_before_starting_an_engine(user_registry, tmp_path):
    with pytest.raises(models.ModelError, match="does not exist"):
        llm.load_chat_model("judge", str(tmp_path / "nowhere"))
    with pytest.raises(models.ModelError, match="needs a chat model"):
        llm.load_chat_model("judge", "all-minilm-l6-v2")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[models.x]\npath = 'a'\npackage = 'b'\n", "exactly one of path"),
        ("[models.x]\nkind = 'chat'\n", "exactly one of path"),
        ("[models.x]\npath = 'a'\nweights = 'b'\n", r"unknown key\(s\) \['weights'\]"),
        ("[models.x]\npath = 'a'\nkind = 'vision'\n", "kind = 'vision'"),
        ("[models.x]\npath = 'a'\nvllm = 3\n", "vllm must be a table"),
        ("[roles]\ncritic = 'x'\n", "roles are rewriter, judge, embedder"),
        ("[roles]\njudge = 'undefined-model'\n", r"no \[models.undefined-model\]"),
        ("[model.x]\npath = 'a'\n", r"unknown table\(s\) \['model'\]"),
        ("[models.qwen2.5-7b]\npath = 'a'\n", r'must be quoted: \[models."qwen2.5-7b"\]'),
        ("[roles\n", "cannot read the model registry"),
    ],
)
def test_bad_user_registry_names_the_file_and_the_problem(user_registry, text, problem):
    user_registry.write_text(text)
    with pytest.raises(models.ModelError, match=problem) as error:
        models.load_registry()
    assert str(user_registry) in str(error.value)


def test_models_command_lists_roles_and_presence(user_registry, tmp_path):
    write(
        user_registry,
        f"""
        [roles]
        judge = "big-judge"

        [models.big-judge]
        path = "{tmp_path / 'absent'}"
        """,
    )
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:4]}
    assert rows["judge"][1:4] == ["big-judge", "chat", "no"]
    assert rows["embedder"][1:4] == ["all-minilm-l6-v2", "embedding", "yes"]
    assert str(user_registry) in result.output


def test_models_command_reports_a_bad_registry_without_traceback(user_registry):
    user_registry.write_text("[roles]\ncritic = 'x'\n")
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert str(user_registry) in result.output


def test_models_prepare_is_quiet_and_quick_when_done(user_registry, tmp_path, monkeypatch):
    """With the converted folder in place, `prepare` must not convert again (it would print and take ~20 s)."""
    monkeypatch.setenv("LIFT_LOCAL_WEIGHTS", str(tmp_path / "weights"))
    model_folder(tmp_path / "weights" / "smollm2-135m-instruct")
    result = CliRunner().invoke(main, ["models", "prepare", "--quiet"])
    assert (result.exit_code, result.output) == (0, "")
    assert sorted(p.name for p in (tmp_path / "weights" / "smollm2-135m-instruct").iterdir()) == ["config.json"]


def test_registry_examples_in_the_models_readme_are_valid(tmp_path):
    readme = (models.packaged_registry_path().parent / "README.md").read_text()
    blocks = readme.split("```toml\n")[1:]
    assert len(blocks) >= 2
    for number, block in enumerate(blocks):
        example = write(tmp_path / f"example{number}.toml", block.split("```")[0])
        registry = models.load_registry([models.packaged_registry_path(), example])
        assert "qwen2.5-7b-instruct" in registry.models


@pytest.fixture
def stub_vllm(monkeypatch):
    """Stands in for the vllm module: records which engines start (with which settings) and stop."""
    events = []

    class StubLLM:
        def __init__(self, model, **settings):
            events.append(("start", Path(model).name, settings))
            shutdown = lambda: events.append(("stop", Path(model).name))  # noqa: E731
            self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=shutdown))

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=StubLLM))
    monkeypatch.setitem(sys.modules, "vllm.platforms", SimpleNamespace(current_platform=SimpleNamespace(is_cpu=lambda: True)))
    monkeypatch.setattr(inprocess, "_ENGINES", {})
    return events


def test_engines_start_on_first_use_one_at_a_time(stub_vllm, user_registry, tmp_path):
    a = llm.load_chat_model("rewriter", str(model_folder(tmp_path / "a")))
    b = llm.load_chat_model("judge", str(model_folder(tmp_path / "b")), engine_options={"max_model_len": 1024})
    assert llm.load_chat_model("judge", str(tmp_path / "a")) is a  # same model, same engine
    assert stub_vllm == []  # nothing starts before the first request
    for engine in (a, b, a):
        engine.llm  # noqa: B018 (starts the engine)
    assert [event[:2] for event in stub_vllm] == [("start", "a"), ("stop", "a"), ("start", "b"), ("stop", "b"), ("start", "a")]
    cpu_defaults = {"enforce_eager": True, "kv_cache_memory_bytes": 2 * 1024**3, "enable_prefix_caching": True}
    assert stub_vllm[0][2].items() >= {**cpu_defaults, "max_model_len": 4096}.items()
    assert stub_vllm[2][2]["max_model_len"] == 1024
    close_engines()
    assert stub_vllm[-1] == ("stop", "a")
