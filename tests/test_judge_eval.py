"""`lift-local judge-eval` on GPT-4-scored MT-bench answers: statistics against scipy where the answer is
known (a fake judge that writes GPT-4's own score, one that writes its reverse), baselines, and clear errors."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import FakeChat, json_reply, last_user_message
from scipy import stats

from lift_local.cli import main
from lift_local.judge import evaluate as judge_eval
from lift_local.judge.agreement import ScoreTable, load_scores

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


def table_row(line: str) -> tuple[str, list[str]]:
    """A row of judge-eval's table: its name, and its numbers (n/a for a correlation undefined)."""
    name, numbers = re.match(r"(.+?)\s+(\d+\s.*)", line).groups()
    return name, re.findall(r"-?\d+(?:\.\d+)?|n/a", numbers)


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
    # two baselines, each judge's written total and final quality, and the two judges as a jury
    cells = {name: numbers for name, numbers in map(table_row, rows)}
    names = list(cells)
    assert len(names) == 7 and names[0] == "echo: written total" and names[-1] == "jury (echo + reverse): total"
    assert names[-2] == "reverse: written total"
    assert {"baseline: random judge", "baseline: length score alone", "echo: final quality"} <= set(names)
    assert cells[names[-1]][1:4] == ["n/a", "n/a", "n/a"]  # the two cancel out: the jury's totals are all equal
    undecided = [line for line in lines if line.startswith("undecided: ")]
    assert not any("echo: written total" in line for line in undecided)  # 1.00 [1.00, 1.00] is above every other

    gpt4 = [row["gpt4_score"] for row in sample]
    lengths = [len((row["instruction"] + row["output"]).replace("\t", "").replace("\n", "")) for row in sample]
    # n, then Spearman, Pearson and Kendall each with its interval
    assert cells["echo: written total"][:10] == ["40", "1.00", "1.00", "1.00", "1.00", "1.00", "1.00", "1.00", "1.00", "1.00"]
    assert cells["reverse: written total"][:4] == ["40", "-1.00", "-1.00", "-1.00"]
    length = cells["baseline: length score alone"]
    # The length score is monotone in length below the 98th percentile and capped above: Spearman as scipy's
    # on the same capped values, inside its interval.
    cap = sorted(lengths)[int(0.98 * (len(lengths) - 1))]
    capped = [min(n, cap) for n in lengths]
    spearman, low, high = map(float, length[1:4])
    assert spearman == pytest.approx(stats.spearmanr(capped, gpt4).statistic, abs=0.01) and low < spearman < high
    assert float(length[7]) == pytest.approx(stats.kendalltau(capped, gpt4).statistic, abs=0.01)
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


def test_rows_whose_intervals_overlap_are_called_undecided():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=200)
    reference = ScoreTable("gpt4", "gpt4", {str(i): 50 + 10 * v for i, v in enumerate(truth)}, {}, frozenset())

    def noisy(noise):
        values = truth + noise * rng.normal(size=200)
        return ScoreTable("s", "s", {str(i): 50 + 10 * v for i, v in enumerate(values)}, {}, frozenset())

    rows = judge_eval.ranked([judge_eval.row(name, noisy(noise), reference, 0.5)
                              for name, noise in (("sharp", 0.1), ("sharp too", 0.11), ("blunt", 3.0))])
    assert {r.name for r in rows[:2]} == {"sharp", "sharp too"} and rows[2].name == "blunt"
    assert judge_eval.undecided(rows) == [(rows[0].name, rows[1].name)]
    assert f"undecided: {rows[0].name} and {rows[1].name}" in judge_eval.format_table(rows, reference)
