"""Quality compression end to end through the CLI with the real SmolLM2 model as judge, on real records."""

import pytest
from click.testing import CliRunner

from lift_local.cli import main
from lift_local.judge.protocol import DIMENSIONS, Verdict
from lift_local.records import read_records

pytestmark = pytest.mark.vllm


def test_quality_command_with_real_judge_and_the_papers_integer_rubric(smollm, real_sample, tmp_path):
    source = real_sample("code_alpaca_2k.json", [1, 3, 7, 12, 20, 33, 54, 88])
    out, baseline, scores = tmp_path / "kept.jsonl", tmp_path / "baseline.jsonl", tmp_path / "scores.jsonl"
    args = ["quality", str(source), str(out), "--top", "3", "--judge", smollm.name, "--no-expected",
            "--baseline", str(baseline), "--scores", str(scores), "--cache-dir", str(tmp_path / "cache")]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output

    scored = read_records(scores)
    assert len(scored) == 8
    judged = [r for r in scored if r.meta["judge"]["status"] == "ok"]
    assert len(judged) >= 6, run.output  # the JSON schema constrains the reply, so parse failures are rare
    for r in judged:
        verdict = r.meta["judge"]
        assert set(verdict["scores"]) == set(DIMENSIONS)
        assert all(0 <= verdict["scores"][d] <= top for d, top in DIMENSIONS.items())
        assert verdict["total"] == sum(verdict["scores"].values())
        assert verdict["raw"].strip().startswith("{")
        assert r.meta["quality"] == pytest.approx(0.9 * verdict["total"] + 0.1 * r.meta["length_score"])
    kept = read_records(out)
    assert {r.id for r in kept} == {r.id for r in judged[:3]}  # the scores file is ranked best first
    assert len(read_records(baseline)) == 3
    for name in (*DIMENSIONS, "total", "quality"):
        assert f"\n{name} " in run.output


def test_expected_scores_by_default_with_real_judge_lie_in_range_and_break_ties(smollm, real_sample, tmp_path):
    source = real_sample("code_alpaca_2k.json", list(range(100, 112)))
    scores = tmp_path / "scores.jsonl"
    args = ["quality", str(source), str(tmp_path / "kept.jsonl"), "--top", "4", "--judge", smollm.name,
            "--scores", str(scores), "--cache-dir", str(tmp_path / "cache")]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    verdicts = [Verdict.of(r) for r in read_records(scores)]
    judged = [v for v in verdicts if v.ok]
    assert len(judged) >= 10, run.output
    for verdict in judged:
        assert verdict.fallback == [] and verdict.missing_values == 0  # every digit read at every dimension
        assert all(0 <= verdict.expected[d] <= top for d, top in DIMENSIONS.items())
        assert verdict.expected_total == pytest.approx(sum(verdict.expected.values()))
    assert len({v.expected_total for v in judged}) > len({v.total for v in judged})  # ties the integers left
