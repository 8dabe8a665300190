"""A phase added in one module reaches `lift-local run`, the config and the report without touching any
other file: the toy phase below keeps the records whose answer is at most `max_chars` long."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner
from fakes import FakeChat
from test_pipeline import judge_reply, rewriter_reply

from lift_local.cli import main
from lift_local.phases import Mapped, Phase, Selection, all_phases, option
from lift_local.records import read_records


@pytest.fixture
def toy_phase():
    @dataclasses.dataclass(frozen=True)
    class ShortParams:
        max_chars: int = option(10_000, "Longest answer kept, in characters.", low=1)

    class Short(Phase, name="short", title="Short answers", params=ShortParams, order=55):  # after variety
        """Keep the records whose answer is at most --max-chars long."""

        def map(self, batch, kit):
            return [Mapped(record, len(record.output)) for record in batch]

        def select(self, features):
            keep = [i for i, length in enumerate(features) if length <= self.params.max_chars]
            dropped = [i for i, length in enumerate(features) if length > self.params.max_chars]
            return Selection(keep, {"dropped": dropped}, stats={"longest_kept": max(features[i] for i in keep)})

        @classmethod
        def notes(cls, stats):
            return f"longest answer kept: {stats['longest_kept']} characters"

        @classmethod
        def report(cls, run):
            kept = run.records("short")
            return f"<h2>{cls.title}</h2><p>{len(kept)} short answers kept</p>", []

    yield Short
    del Phase._registry["short"]


def test_a_phase_declared_in_one_module_runs_in_the_pipeline_config_and_report(toy_phase, tmp_path, real_sample,
                                                                              cli_models):
    assert [cls.name for cls in all_phases()] == ["dedup", "enhance", "expand", "decontaminate", "variety", "short", "quality"]
    cli_models["rewriter"] = FakeChat(rewriter_reply, name="fake-rewriter")
    cli_models["judge"] = FakeChat(judge_reply, name="fake-judge")
    config = tmp_path / "lift.toml"
    config.write_text("[expand]\ntask = 'code'\nrounds = 1\n[variety]\nkeep = 0.5\n[quality]\ntop = 3\n")
    sample = real_sample("code_alpaca_2k.json", list(range(200, 216)))

    def run(*options):
        argv = ["run", str(sample), "--out", str(tmp_path / "run"), "--config", str(config), *options]
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 0, result.output
        return result, json.loads((tmp_path / "run" / "manifest.json").read_text())["phases"]

    result, phases = run()
    assert "[6/7] short: 16 → 16 records" in result.output  # the default keeps every answer
    lengths = sorted(len(r.output) for r in read_records(tmp_path / "run" / phases["short"]["output"]))
    cut = lengths[len(lengths) // 2]

    result, phases = run("--set", f"short.max_chars={cut}")
    assert "[5/7] variety: unchanged" in result.output and "[6/7] short: 16 → " in result.output
    assert list(phases) == ["dedup", "enhance", "expand", "decontaminate", "variety", "short", "quality"]
    short = phases["short"]
    assert short["params"] == {"max_chars": cut}
    kept = read_records(tmp_path / "run" / short["output"])
    dropped = read_records(tmp_path / "run" / short["side"]["dropped"])
    assert len(kept) + len(dropped) == 16 and kept and dropped
    assert all(len(r.output) <= cut for r in kept) and all(len(r.output) > cut for r in dropped)
    assert phases["quality"]["records_in"] == len(kept)

    report = (tmp_path / "run" / "report.html").read_text()
    assert f"<h2>Short answers</h2><p>{len(kept)} short answers kept</p>" in report
    assert f"longest answer kept: {short['stats']['longest_kept']} characters" in report


def test_the_config_checks_a_new_phases_parameters(toy_phase, tmp_path, real_sample, cli_models):
    sample = real_sample("code_alpaca_2k.json", [0, 1])
    result = CliRunner().invoke(main, ["run", str(sample), "--out", str(tmp_path / "run"), "--set", "short.max_chars='x'"])
    assert result.exit_code == 1
    assert "--set short.max_chars='x': must be an integer, got 'x'" in result.output
