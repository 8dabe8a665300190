"""`lift-local ab`: bad input is one line and exit 1 before any training starts; a run folder's three arms are
trained and evaluated for real, and the results reach results.json, the table, the figure, the report, the
manifest and the dataset card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, SHARED_DATA
from fakes import FakeChat
from test_pipeline import judge_reply

from lift_local.ab import train
from lift_local.cli import main
from lift_local.records import read_records, write_records

SAMPLE = REPO / "lift_local" / "data" / "code_alpaca_sample.json"


@pytest.fixture
def no_training(monkeypatch):
    """Any training fails the test: a bad input must stop the command before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "train", refuse)


@pytest.fixture
def arm(tmp_path):
    """Writes `count` real Code Alpaca records (from `start`) as an arm file; returns its path."""
    records = read_records(SAMPLE)

    def write(name: str, count: int, start: int = 0):
        path = tmp_path / f"{name}.jsonl"
        write_records(path, records[start:start + count])
        return path

    return write


def ab(*args: str):
    return CliRunner().invoke(main, ["ab", *map(str, args)])


def test_no_arm_at_all(tmp_path, no_training):
    result = ab("--out", tmp_path / "ab")
    assert result.exit_code == 1 and "no arm to train: give a run folder, or --arm NAME=FILE" in result.output


def test_a_missing_arm_file(tmp_path, no_training):
    result = ab("--arm", f"curated={tmp_path / 'nope.jsonl'}", "--out", tmp_path / "ab")
    assert result.exit_code == 1 and f"{tmp_path / 'nope.jsonl'}: no such file" in result.output


def test_an_empty_arm_file(tmp_path, no_training):
    (tmp_path / "empty.jsonl").write_text("")
    result = ab("--arm", f"curated={tmp_path / 'empty.jsonl'}", "--out", tmp_path / "ab")
    assert result.exit_code == 1 and f"{tmp_path / 'empty.jsonl'}: the file is empty" in result.output


def test_an_arm_too_small_for_one_optimizer_step(tmp_path, arm, no_training):
    small = arm("small", 3)
    result = ab("--arm", f"curated={arm('curated', 8, 10)}", "--arm", f"small={small}", "--out", tmp_path / "ab")
    assert result.exit_code == 1
    assert (f"{small}: arm small has 3 records to train on, fewer than one optimizer step takes (4 x 2 = 8): give "
            "it more records or lower --batch-size") in result.output
    # An answer that starts beyond --max-length teaches nothing: such records are counted as left out.
    result = ab("--arm", f"curated={arm('curated', 8, 10)}", "--max-length", "40", "--out", tmp_path / "ab")
    assert result.exit_code == 1 and "of its 8 have no answer within 40 tokens" in result.output


def test_an_unknown_benchmark(tmp_path, arm, no_training):
    result = ab("--arm", f"curated={arm('curated', 8)}", "--benchmarks", "arc_easy,arc_hard", "--out", tmp_path / "ab")
    assert result.exit_code == 1 and "unknown benchmark arc_hard: choose from arc_easy" in result.output


def test_a_missing_base_model(tmp_path, arm, no_training):
    missing = tmp_path / "models" / "gone"
    result = ab("--arm", f"curated={arm('curated', 8)}", "--student", missing, "--out", tmp_path / "ab")
    assert result.exit_code == 1 and f"folder {missing} does not exist" in result.output


def test_a_heldout_file_that_overlaps_an_arm(tmp_path, arm, no_training):
    heldout = arm("heldout", 5, 6)  # records 6-10, of which 6 and 7 are in the arm (0-7)
    result = ab("--arm", f"curated={arm('curated', 8)}", "--heldout", heldout, "--out", tmp_path / "ab")
    assert result.exit_code == 1
    assert f"{heldout}: 2 of its 5 records are also in arm curated (same instruction and input" in result.output


@pytest.mark.parametrize(("gpu", "limit"), [(False, 200), (True, None)])
def test_on_a_cpu_each_benchmark_is_sampled_unless_told(tmp_path, arm, monkeypatch, gpu, limit):
    """MMLU alone has 14,042 items: every item of every benchmark is hours a model on a CPU."""
    import torch

    from lift_local.ab import run

    plans = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(run, "run_ab", lambda plan, *args, **kwargs: plans.append(plan) or exit(3))
    assert ab("--arm", f"curated={arm('curated', 8)}", "--out", tmp_path / "ab").exit_code == 3
    assert ab("--arm", f"curated={arm('curated', 8)}", "--limit", "7", "--out", tmp_path / "ab").exit_code == 3
    assert [plan.limit for plan in plans] == [limit, 7]
    assert plans[0].benchmarks == (["arc_easy", "arc_challenge", "mmlu", "truthfulqa_mc", "gsm8k", "humaneval", "mbpp"]
                                   if gpu else ["arc_easy", "arc_challenge", "mmlu", "truthfulqa_mc"])


def test_a_malformed_arm_option(tmp_path, no_training):
    result = ab("--arm", "curated.jsonl", "--out", tmp_path / "ab")
    assert result.exit_code == 2 and "expected NAME=FILE" in result.output


@pytest.mark.model
def test_a_run_folder_is_compared_and_its_report_manifest_and_card_gain_the_results(tmp_path, cli_models):
    """A run of 6 real Code Alpaca records (fake judge) keeps 2; its arms curated (2), random (2) and input (6)
    are trained (1, 1 and 3 steps) and, with the base model, scored on 4 held-out records."""
    cli_models["judge"] = FakeChat(judge_reply, name="fake-judge")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "run", str(SHARED_DATA / "code_alpaca_2k.json"), "--out", str(run), "--limit", "6", "--skip", "enhance",
        "--skip", "expand", "--set", "variety.keep=0.7", "--set", "quality.top=2", "--set", "quality.expected=false"])
    assert result.exit_code == 0, result.output
    heldout = tmp_path / "heldout.json"
    heldout.write_text(json.dumps(json.loads((SHARED_DATA / "code_alpaca_2k.json").read_text())[-4:]))

    args = [run, "--benchmarks", "none", "--heldout", heldout, "--epochs", "1", "--batch-size", "2",
            "--gradient-accumulation", "1", "--max-length", "192"]
    result = ab(*args)
    assert result.exit_code == 0, result.output
    results = json.loads((run / "ab" / "results.json").read_text())
    assert list(results["arms"]) == ["curated", "random", "input"]
    assert [results["arms"][name]["records"] for name in results["arms"]] == [2, 2, 6]
    assert [results["arms"][name]["training"]["steps"] for name in results["arms"]] == [1, 1, 3]
    for model in ("base", "curated", "random", "input"):
        cell = results["scores"][model]["heldout"]
        assert cell["n"] == 4 and cell["ci_low"] <= cell["score"] <= cell["ci_high"]
    pairs = [(p["a"], p["b"]) for p in results["pairs"]]
    assert pairs == [("curated", "random"), ("curated", "input"), ("random", "input"), ("curated", "base"),
                     ("random", "base"), ("input", "base")]
    assert all(p["ci_low"] <= p["difference"] <= p["ci_high"] and 0 <= p["p_value"] <= 1 for p in results["pairs"])
    table = (run / "ab" / "table.txt").read_text()
    assert table in result.output and all(p["sentence"] in table for p in results["pairs"])
    assert (run / "ab" / "ab.png").read_bytes().startswith(b"\x89PNG")

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["ab"]["folder"] == "ab" and manifest["ab"]["scores"] == results["scores"]
    report = (run / "report.html").read_text()
    assert "Fine-tuning check (lift-local ab)" in report and results["pairs"][0]["sentence"] in report
    assert (run / "figures" / "ab.png").exists()
    card = (run / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["configs"][0]["data_files"][0]["path"] == "curated.jsonl"
    assert "## Fine-tuning check\n\n`lift-local ab` fine-tuned" in card and results["pairs"][0]["sentence"] in card

    again = ab(*args)  # finished arms are not trained again
    assert again.exit_code == 0 and again.output.count(": unchanged, adapter ") == 3


def test_the_loss_said_is_each_epochs_mean_not_one_steps():
    done = train.Trained(Path("a"), "f", records=6, steps=6, tokens=60, seconds=1.0, losses=[4, 3, 2, 1, 1, 0],
                         resumed_from=None)
    assert done.epoch_losses(3) == (3.5, 0.5)
    assert done.epoch_losses(1) == (11 / 6, 11 / 6)
