"""`lift-local judge-eval` on GPT-4-scored MT-bench answers: statistics against scipy where the answer is
known (a fake judge that writes GPT-4's own score, one that writes its reverse), baselines, and clear errors."""

import json

import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import FakeChat, json_reply, last_user_message
from scipy import stats

from lift_local.cli import main
from lift_local.judge.agreement import load_scores

REFERENCE = SHARED_DATA / "mt_bench_gpt4.jsonl"


@pytest.fixture(scope="module")
def sample():
    return [json.loads(line) for line in REFERENCE.read_text().splitlines()][:40]


def judge_from(sample, transform):
    """A fake judge writing, for each answer, the four rubric scores that add up to transform(GPT-4 score)."""
    by_output = {row["output"][:200]: row["gpt4_score"] for row in sample}

    def respond(conversation):
        text = last_user_message(conversation)
        total = transform(next(score for key, score in by_output.items() if key in text))
        accuracy = min(35, total)
        explanation = min(25, total - accuracy)
        difficulty = min(25, total - accuracy - explanation)
        return json_reply(clarity=total - accuracy - explanation - difficulty, difficulty=difficulty,
                          explanation=explanation, accuracy=accuracy)

    return respond


def test_a_judge_that_writes_gpt4s_scores_agrees_perfectly_and_ranks_first(tmp_path, sample, monkeypatch):
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in sample))
    judges = {"echo": FakeChat(judge_from(sample, lambda s: 10 * s), name="echo"),
              "reverse": FakeChat(judge_from(sample, lambda s: 100 - 10 * s), name="reverse")}
    monkeypatch.setattr("lift_local.llm.backend.load_chat_model", lambda role, override=None, **options: judges[override])
    result = CliRunner().invoke(main, ["judge-eval", str(path), "--judge", "echo", "--judge", "reverse", "--no-expected",
                                       "--out", str(tmp_path / "eval"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("score "))
    rows = lines[start + 1: next(i for i, line in enumerate(lines) if line.startswith("(top half"))]
    assert len(rows) == 6  # two baselines, and each judge's written total and final quality
    names = [line[:52].strip() for line in rows]
    assert names[0] == "echo: written total"
    assert names[-1] == "reverse: written total"
    assert {"baseline: random judge", "baseline: length score alone", "echo: final quality"} <= set(names)

    gpt4 = [row["gpt4_score"] for row in sample]
    lengths = [len((row["instruction"] + row["output"]).replace("\t", "").replace("\n", "")) for row in sample]
    cells = {line[:52].strip(): line[52:].split() for line in rows}
    assert cells["echo: written total"][:4] == ["40", "1.00", "1.00", "1.00"]
    assert cells["reverse: written total"][:4] == ["40", "-1.00", "-1.00", "-1.00"]
    length = cells["baseline: length score alone"]
    # The length score is monotone in length below the 98th percentile and capped above: Spearman as scipy's
    # on the same capped values.
    cap = sorted(lengths)[int(0.98 * (len(lengths) - 1))]
    capped = [min(n, cap) for n in lengths]
    assert float(length[2]) == pytest.approx(stats.spearmanr(capped, gpt4).statistic, abs=0.01)
    assert float(length[3]) == pytest.approx(stats.kendalltau(capped, gpt4).statistic, abs=0.01)
    # The scores written with --out are the quality phase's own output: compare-judges reads them by the user's ids.
    ours = load_scores(tmp_path / "eval" / "echo.scores.jsonl")
    assert set(ours.totals) == {row["id"] for row in sample}
    assert (tmp_path / "eval" / "judge-eval.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "options, message",
    [
        (["--reference-field", "gpt4_scor"], "no field 'gpt4_scor' (--reference-field); its fields: gpt4_score, "
                                              "judge_prompt, model"),
        (["--reference-scale", "5"], "'gpt4_score' is 10, outside 0-5 (--reference-scale)"),
        (["--reference-field", "model"], "'model' must be a number, got 'llama2_chat_7b'"),
    ],
)
def test_a_wrong_reference_field_or_scale_is_a_clear_error(tmp_path, sample, options, message):
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in sample))
    result = CliRunner().invoke(main, ["judge-eval", str(path), "--judge", "x", *options])
    assert result.exit_code == 1
    assert message in result.output and f"Error: {path}:record " in result.output
    assert "Traceback" not in result.output
