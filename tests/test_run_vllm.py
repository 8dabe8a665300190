"""`lift-local run` end to end on the real engine: SmolLM2 in vLLM as rewriter and judge, the real embedder,
on seeded samples of both real data sets (NLU and code)."""

import json

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA, SMOLLM

from lift_local.cli import main
from lift_local.records import read_records

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize("data, task", [("dolly_3k.json", "nlu"), ("code_alpaca_2k.json", "code")])
def test_run_curates_a_sample_through_real_vllm(tmp_path, smollm, data, task):
    out = tmp_path / "run"
    argv = [
        "run", str(SHARED_DATA / data), "--out", str(out), "--limit", "6", "--format", "messages",
        "--set", f"models.rewriter='{SMOLLM}'", "--set", f"models.judge='{SMOLLM}'",
        "--set", f"expand.task='{task}'", "--set", "expand.rounds=1",
        "--set", "enhance.max_tokens=160", "--set", "expand.max_tokens=160",
        "--set", "variety.keep=0.6", "--set", "quality.top=3",
    ]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output

    manifest = json.loads((out / "manifest.json").read_text())
    phases = manifest["phases"]
    assert list(phases) == ["dedup", "enhance", "expand", "decontaminate", "variety", "quality"]
    assert [p["status"] for p in phases.values()] == ["done"] * 6
    assert phases["enhance"]["records_in"] == 6 and phases["enhance"]["records_out"] == 6
    assert phases["expand"]["records_out"] >= 6  # the originals, plus whatever rewrites were usable
    assert phases["variety"]["records_out"] == round(0.6 * phases["variety"]["records_in"])
    enhanced = read_records(out / phases["enhance"]["output"])
    assert all(r.meta["enhanced_by"] == SMOLLM and "original_output" in r.meta for r in enhanced)

    scored = read_records(out / phases["quality"]["side"]["scores"])
    assert len(scored) == phases["variety"]["records_out"]
    for record in scored:  # every record has a verdict: a real score, or a failure kept as such
        verdict = record.meta["judge"]
        assert verdict["raw"] is not None and verdict["retries"] >= 0
        if verdict["status"] == "ok":  # by default, expected scores beside the digits written
            assert verdict["total"] == pytest.approx(sum(verdict["scores"].values()))
            assert verdict["expected_total"] == pytest.approx(sum(verdict["expected"].values()))
        else:
            assert "total" not in verdict and "quality" not in record.meta

    curated = read_records(out / "curated.jsonl")
    assert 1 <= len(curated) <= 3 and all(r.meta["judge"]["status"] == "ok" for r in curated)
    assert len((out / "curated.messages.jsonl").read_text().splitlines()) == len(curated)
    assert (out / "report.html").stat().st_size > 10_000
