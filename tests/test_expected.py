"""Expected scores from the judge's token probabilities: the arithmetic against a hand computation, the
fallback when a distribution cannot be read (counted, never a silent default), and the phase ranking by them."""

import json
import math

import pytest
from fakes import FakeChat, last_user_message, run_phase

from lift_local.judge.protocol import DIGITS, DIMENSIONS, Verdict, expected_digits, judge_schema
from lift_local.llm import Reply
from lift_local.phases.quality import Quality, QualityParams
from lift_local.records import Record, content_id


def judge_reply(values: dict[str, int], distributions: dict[str, dict[str, float]], split: str | None = None,
                merged: str | None = None) -> Reply:
    """A JSON reply as a judge's tokenizer would emit it, with top logprobs at every position: at a
    dimension's value the given probabilities, elsewhere the written token alone. `split` writes that
    dimension's value as two tokens ("1", "2"), as a tokenizer that splits numbers into digits would;
    `merged` writes its value in one token with the colon before it (`":5`)."""
    tokens, logprobs = [], []

    def emit(token: str, top: dict[str, float] | None = None) -> None:
        tokens.append(token)
        logprobs.append({t: math.log(p) for t, p in (top or {token: 1.0}).items()})

    emit("{")
    for n, (name, value) in enumerate(values.items()):
        emit(('"' if n == 0 else ',"'))
        emit(name)
        if name == merged:
            emit(f'":{value}')
            continue
        emit('":')
        if name == split:
            emit("1", {"1": 0.6, "2": 0.4})
            emit("2")
        else:
            emit(str(value), distributions.get(name))
    emit("}")
    return Reply("".join(tokens), "stop", logprobs, tokens)


def test_expected_digit_is_the_probability_weighted_mean_of_the_digits_read():
    values = {"clarity": 7, "difficulty": 3, "explanation": 5, "accuracy": 8}
    distributions = {
        "clarity": {"7": 0.5, "8": 0.3, " 8": 0.1, "6": 0.1},  # " 8" and "8" are one value
        "difficulty": {str(d): 0.1 for d in range(10)},  # every digit
        "accuracy": {"8": 0.6, "9": 0.2},  # 8 digits have no probability: renormalised over the two read
    }
    read = expected_digits(judge_reply(values, distributions))
    assert read["clarity"] == (pytest.approx(0.5 * 7 + 0.4 * 8 + 0.1 * 6), 3)
    assert read["difficulty"] == (pytest.approx(4.5), 10)
    assert read["explanation"] == (pytest.approx(5.0), 1)  # only the written digit was offered
    assert read["accuracy"] == (pytest.approx((0.6 * 8 + 0.2 * 9) / 0.8), 2)


def test_a_value_split_over_two_tokens_is_not_read_as_a_digit():
    values = {"clarity": 7, "difficulty": 3, "explanation": 5, "accuracy": 12}
    read = expected_digits(judge_reply(values, {}, split="accuracy"))
    assert "accuracy" not in read and set(read) == {"clarity", "difficulty", "explanation"}


def test_a_reply_without_logprobs_has_no_expected_scores():
    assert expected_digits(Reply('{"clarity": 7}', "stop")) == {}


def record(n: int) -> Record:
    instruction = f"Task number {n}: reverse a list."
    return Record(instruction, "", "An answer.", id=content_id(instruction, "", "An answer."))


def test_the_phase_ranks_by_expected_scores_counts_fallbacks_and_keeps_both_scores():
    written = {"clarity": 5, "difficulty": 5, "explanation": 5, "accuracy": 5}  # the same for every record

    def respond(conversation):
        n = int(conversation[-1]["content"].split("Task number ")[1].split(":")[0])
        accuracy = {"5": 0.5, "9": 0.5} if n == 2 else {"5": 0.9, "0": 0.1}
        return judge_reply(written, {"accuracy": accuracy}, merged="clarity" if n == 3 else None)

    judge = FakeChat(respond)
    outcome = run_phase(Quality(QualityParams(expected=True, top=1)), [record(n) for n in range(4)], judge=judge)

    call = judge.calls[0]
    assert call.sampling.logprobs == 20 and call.json_schema == judge_schema(DIGITS)
    assert "a single digit from 0 (worst) to 9 (best)" in call.conversations[0][0]["content"]  # judge_digits
    verdicts = {r.instruction.split(":")[0]: Verdict.of(r) for r in outcome.side["scores"]}
    best = verdicts["Task number 2"]
    assert outcome.records[0].instruction.startswith("Task number 2")  # the integers tie; expected decides
    assert best.scores == {name: 5 * top / 9 for name, top in DIMENSIONS.items()}  # what was written, in points
    assert best.expected["accuracy"] == pytest.approx(7 * 35 / 9)
    assert best.expected_total == pytest.approx(best.total + 2 * 35 / 9)
    # Record 3's clarity came in one token with the colon: it falls back to the value written, visibly.
    fallen = verdicts["Task number 3"]
    assert fallen.fallback == ["clarity"] and fallen.expected["clarity"] == fallen.scores["clarity"]
    assert outcome.stats["expected"] == {"records_with_fallback": 1, "fallback_dimensions": 1, "missing_values": 3 * (8 + 9 * 3) + (8 + 9 * 2)}
    assert outcome.stats["distinct_sampled_totals"] == 1 and outcome.stats["distinct_totals"] == 2
    assert any("use the score the judge wrote" in w for w in outcome.stats["warnings"])


def test_a_run_with_expected_scores_reports_them_beside_the_written_ones(tmp_path, real_sample, cli_models):
    """The report of a real pipeline run (fake judge) shows the expected totals and the ties they broke."""
    from click.testing import CliRunner

    from lift_local.cli import main

    def respond(conversation):
        n = len(last_user_message(conversation))
        return judge_reply({"clarity": 5, "difficulty": 5, "explanation": 5, "accuracy": 5},
                           {"accuracy": {"5": 0.5, str(n % 10): 0.5}})

    cli_models["judge"] = FakeChat(respond, name="fake-judge")
    sample = real_sample("code_alpaca_2k.json", list(range(12)))
    argv = ["run", str(sample), "--out", str(tmp_path / "run"), "--skip", "enhance", "--skip", "expand",
            "--skip", "variety", "--set", "quality.expected=true", "--set", "quality.top=4"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "run" / "manifest.json").read_text())["phases"]["quality"]["stats"]
    assert stats["distinct_sampled_totals"] == 1 and stats["distinct_totals"] > 1
    report = (tmp_path / "run" / "report.html").read_text()
    assert f"take {stats['distinct_totals']} distinct values where the written totals take 1" in report
    # The written totals are all equal, which alone would be warned about; the selection ranks by the
    # expected totals, which spread, so the uniformity check looks at those.
    assert stats["uniform_warning"] is False and "nearly uniform" not in report
