"""Quality compression with a fake judge: reply validation, score arithmetic, retries, selection, baseline."""

import json
import math
import statistics

import pytest
from click.testing import CliRunner
from fakes import FakeChat, json_reply, last_user_message, run_phase

from lift_local.cli import main
from lift_local.judge.protocol import (
    DIMENSIONS,
    JUDGE_SCHEMA,
    Verdict,
    length_score,
    parse_judge_reply,
    record_length,
)
from lift_local.llm import PROMPT_TOO_LONG
from lift_local.phases.quality import Quality, QualityParams, uniformity_warnings
from lift_local.records import Record, content_id, read_records


class quality:
    """The quality phase run in process, its outcome seen as its parts: ranked (best first), failures, kept,
    baseline."""

    def __init__(self, records, judge, params):
        self.phase = Quality(params)
        self.outcome = run_phase(self.phase, records, judge=judge)
        self.kept, self.scored, self.stats = self.outcome.records, self.outcome.side["scores"], self.outcome.stats
        self.baseline = self.outcome.side["baseline"]
        self.ranked = [r for r in self.scored if Verdict.of(r).ok]
        self.failures = [r for r in self.scored if not Verdict.of(r).ok]

    def report(self):
        return self.phase.summary(self.outcome)


def integers(**values) -> QualityParams:
    """The paper's integer rubric (--no-expected), which these fake judges write: the values written are the
    scores ranked. Expected scores are tested in test_expected.py."""
    return QualityParams(expected=False, **values)


GOOD = {"clarity": 10, "difficulty": 20, "explanation": 15, "accuracy": 30}


def record(instruction, output="an answer", input=""):
    record_id = content_id(instruction, input, output)
    return Record(instruction, input, output, id=record_id, meta={"origin": "original"})


def instruction_of(conversation):
    return last_user_message(conversation).split("\n")[1]


def judge_by_instruction(scores):
    """A fake judge replying `scores[instruction]` (a dict of scores, or raw text) for each record."""

    def respond(conversation):
        reply = scores[instruction_of(conversation)]
        return reply if isinstance(reply, str) else json.dumps(reply)

    return FakeChat(respond, name="fake-judge")


def scores_with_total(total):
    """Valid scores adding up to `total` (0-100)."""
    result, left = {}, total
    for name, top in DIMENSIONS.items():
        result[name] = min(top, left)
        left -= result[name]
    return result


# --- parse_judge_reply ---


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        f"Here are my scores: {json.dumps(GOOD)} I hope this helps.",
        f"```json\n{json.dumps(GOOD, indent=2)}\n```",
        "{not json} then " + json.dumps(GOOD),  # the first brace starts no object; a later one does
        json.dumps({**GOOD, "total": 100, "reason": "fine"}),  # keys beyond the rubric are ignored
        json.dumps({**GOOD, "clarity": 10.0}),  # an integral number is an integer (JSON Schema)
    ],
)
def test_valid_replies_parse_to_the_dimension_scores(text):
    assert parse_judge_reply(text) == ("ok", GOOD)


@pytest.mark.parametrize(
    "text, status",
    [
        ("", "empty"),
        ("  \n", "empty"),
        ("The answer deserves 80 points.", "invalid_json"),
        ('{"clarity": 10, "difficulty": 20,', "invalid_json"),  # cut off
        ("[10, 20, 15, 30]", "invalid_json"),
        (json.dumps({"clarity": 10, "difficulty": 20, "explanation": 15}), "missing_field"),
        (json.dumps({"total": 75}), "missing_field"),
        (json.dumps({**GOOD, "accuracy": 36}), "out_of_range"),
        (json.dumps({**GOOD, "clarity": 16}), "out_of_range"),
        (json.dumps({**GOOD, "difficulty": -1}), "out_of_range"),
        (json.dumps({**GOOD, "explanation": 12.5}), "not_integer"),
        (json.dumps({**GOOD, "explanation": "12"}), "not_integer"),
        (json.dumps({**GOOD, "clarity": True}), "not_integer"),
        (json.dumps({**GOOD, "clarity": None}), "not_integer"),
    ],
)
def test_bad_replies_get_a_status_and_no_scores(text, status):
    assert parse_judge_reply(text) == (status, None)


def test_schema_bounds_match_the_rubric():
    assert sum(DIMENSIONS.values()) == 100
    for name, top in DIMENSIONS.items():
        assert JUDGE_SCHEMA["properties"][name] == {"type": "integer", "minimum": 0, "maximum": top}
    assert JUDGE_SCHEMA["required"] == list(DIMENSIONS)


# --- scoring arithmetic ---


def test_length_ignores_tabs_and_newlines():
    assert record_length(Record("a\tb\n", "c\n\n", "d e", id="x")) == 6


def test_length_score_and_final_quality_match_an_independent_computation():
    outputs = ["x" * n + "\n\t" * (n % 3) for n in (3, 10, 40, 41, 90, 200, 350, 351, 500, 1000)]
    records = [record(f"Task {i}", out) for i, out in enumerate(outputs)]
    totals = [35, 50, 62, 70, 71, 77, 80, 85, 90, 95]
    judge = judge_by_instruction({r.instruction: scores_with_total(t) for r, t in zip(records, totals)})
    result = quality(records, judge, integers(top=10))

    lengths = [len(r.instruction) + len(r.output.replace("\n", "").replace("\t", "")) for r in records]
    ordered = sorted(lengths)
    position = 0.98 * (len(ordered) - 1)  # the 98th percentile, interpolated linearly between neighbours
    low = math.floor(position)
    threshold = ordered[low] + (position - low) * (ordered[low + 1] - ordered[low])
    assert result.stats["length_T"] == pytest.approx(threshold)

    by_id = {r.id: r for r in result.ranked}
    for r, length, total in zip(records, lengths, totals):
        scored = by_id[r.id]
        expected_length_score = 100.0 if length >= threshold else 100.0 * length / threshold
        assert scored.meta["length_score"] == pytest.approx(expected_length_score)
        assert scored.meta["judge"]["total"] == total
        assert scored.meta["quality"] == pytest.approx(0.9 * total + 0.1 * expected_length_score)
    finals = [r.meta["quality"] for r in result.ranked]
    assert finals == sorted(finals, reverse=True)


def test_weights_and_percentile_are_parameters():
    records = [record("Short", "ab"), record("Long", "x" * 100)]
    judge = judge_by_instruction({"Short": scores_with_total(80), "Long": scores_with_total(40)})
    params = integers(top=2, judge_weight=0.5, length_weight=0.5, length_percentile=50)
    result = quality(records, judge, params)
    threshold = (len("Shortab") + len("Long") + 100) / 2
    assert result.stats["length_T"] == pytest.approx(threshold)
    scored = {r.instruction: r.meta["quality"] for r in result.ranked}
    assert scored["Short"] == pytest.approx(0.5 * 80 + 0.5 * 100 * 7 / threshold)
    assert scored["Long"] == pytest.approx(0.5 * 40 + 0.5 * 100)


def test_length_score_is_full_at_or_above_the_threshold():
    assert length_score(50, 50.0) == 100.0
    assert length_score(80, 50.0) == 100.0
    assert length_score(25, 50.0) == 50.0


# --- the judge's replies: metadata, retries, failures ---


def test_judged_records_keep_verdict_raw_reply_and_retry_count():
    records = [record("A"), record("B")]
    judge = judge_by_instruction({"A": GOOD, "B": f"Sure! {json.dumps(GOOD)}"})
    result = quality(records, judge, integers(top=2))
    verdicts = {r.instruction: r.meta["judge"] for r in result.ranked}
    expected = {"status": "ok", "scores": GOOD, "total": 75, "raw": json.dumps(GOOD), "retries": 0}
    assert verdicts["A"] == {**expected, "model": "fake-judge"}
    assert verdicts["B"]["raw"] == f"Sure! {json.dumps(GOOD)}"
    [call] = judge.calls
    assert call.json_schema == JUDGE_SCHEMA
    assert call.sampling.temperature == 0.0


def test_failed_replies_are_asked_again_with_another_seed_and_never_become_scores():
    attempts = {
        "Fixed on retry": ["not json", json_reply(**GOOD)],
        "Always bad": ["nope", "{", '{"clarity": 99}'],
    }

    def respond(conversation):
        instruction = instruction_of(conversation)
        return attempts[instruction].pop(0) if instruction in attempts else json_reply(**GOOD)

    judge = FakeChat(respond)
    records = [record("Fine"), record("Fixed on retry"), record("Always bad")]
    params = integers(top=3, retries=2, seed=7, retry_temperature=0.6)
    result = quality(records, judge, params)

    assert [len(call.conversations) for call in judge.calls] == [3, 2, 1]  # only failures are asked again
    assert [(c.sampling.seed, c.sampling.temperature) for c in judge.calls] == [(7, 0.0), (8, 0.6), (9, 0.6)]
    retries = {r.instruction: r.meta["judge"]["retries"] for r in result.ranked}
    assert retries == {"Fine": 0, "Fixed on retry": 1}
    [failed] = result.failures
    assert failed.instruction == "Always bad"
    assert failed.meta["judge"] == {
        "status": "missing_field", "raw": '{"clarity": 99}', "retries": 2, "model": "fake-chat"
    }
    assert "quality" not in failed.meta and "length_score" not in failed.meta
    assert failed.id not in {r.id for r in result.kept}  # asked for all 3, only the 2 judged can be kept
    assert len(result.kept) == 2
    assert result.stats["failed"] == {"missing_field": 1}
    assert any("only 2 were judged" in w for w in result.stats["warnings"])
    assert result.scored == result.ranked + result.failures


def test_no_retries_means_one_request_per_record():
    judge = FakeChat(lambda c: "no")
    result = quality([record("A"), record("B")], judge, integers(top=1, retries=0))
    assert len(judge.calls) == 1
    assert [r.meta["judge"]["status"] for r in result.failures] == ["invalid_json", "invalid_json"]
    assert result.ranked == [] and result.kept == [] and result.baseline == []


def test_a_reply_cut_off_at_max_tokens_is_reported_as_truncated():
    judge = FakeChat(lambda c: '{"clarity": 10, "diffi', finish_reason="length")
    result = quality([record("A")], judge, integers(top=1, retries=1))
    assert result.failures[0].meta["judge"]["status"] == "truncated"
    assert result.failures[0].meta["judge"]["retries"] == 1


def test_a_prompt_too_long_for_the_judge_is_reported_and_not_asked_again():
    judge = FakeChat(lambda c: "", finish_reason=PROMPT_TOO_LONG)
    result = quality([record("A")], judge, integers(top=1, retries=2))
    assert len(judge.calls) == 1
    assert result.failures[0].meta["judge"]["status"] == "prompt_too_long"


# --- selection, shuffling, baseline ---


def twenty_records():
    records = [record(f"Task {i:02d}", "y" * 50) for i in range(20)]
    totals = {r.instruction: scores_with_total(40 + 2 * i) for i, r in enumerate(records)}  # rising with i
    judge = judge_by_instruction(totals)
    return records, judge


@pytest.mark.parametrize("top, kept", [(5, 5), (0.25, 5), (0.5, 10), (1.0, 20), (0.01, 1), (30, 20)])
def test_top_count_or_fraction_keeps_the_best(top, kept):
    records, judge = twenty_records()
    result = quality(records, judge, integers(top=top))
    assert len(result.kept) == kept
    best = sorted(records, key=lambda r: r.instruction, reverse=True)[:kept]  # totals rise with the index
    assert {r.id for r in result.kept} == {r.id for r in best}
    assert len(result.baseline) == kept


def test_kept_records_are_shuffled_by_the_seed():
    records, judge = twenty_records()

    def kept(seed):
        return [r.id for r in quality(records, judge, integers(top=10, seed=seed)).kept]

    assert kept(1) == kept(1)
    assert kept(1) != kept(2) and set(kept(1)) == set(kept(2))
    best_first = [r.id for r in quality(records, judge, integers(top=10, seed=1)).ranked[:10]]
    assert kept(1) != best_first and set(kept(1)) == set(best_first)


def test_baseline_is_a_random_subset_of_the_whole_input_of_the_kept_size():
    records, judge = twenty_records()
    baselines = [quality(records, judge, integers(top=8, seed=s)).baseline for s in range(5)]
    ids = {r.id for r in records}
    for baseline in baselines:
        assert len(baseline) == 8 and len({r.id for r in baseline}) == 8
        assert {r.id for r in baseline} <= ids
    assert len({frozenset(r.id for r in b) for b in baselines}) > 1  # depends on the seed
    worst = {r.id for r in records[:12]}  # not in the top 8
    assert any({r.id for r in b} & worst for b in baselines)  # not drawn from the kept records only


# --- distributions and the uniformity warning ---


def test_uniform_judge_is_warned_about_and_spread_judge_is_not():
    assert uniformity_warnings([70, 70, 70, 72, 71, 70]) != []  # sd < 3 and one value holds 67%
    assert uniformity_warnings([60, 60, 60, 80, 90, 40]) == []  # 50% is not above half, and sd is 15.5
    assert uniformity_warnings([60, 60, 60, 60, 90, 40]) != []  # one value holds 67%
    assert uniformity_warnings([50, 58, 66, 74, 82, 90]) == []
    assert uniformity_warnings([70, 71, 72, 73, 74, 75]) != []  # all distinct, but sd 1.7
    assert uniformity_warnings([80]) == []  # one record has no distribution


def test_report_shows_every_dimension_and_the_warning():
    records = [record(f"T{i}") for i in range(6)]
    judge = judge_by_instruction({r.instruction: GOOD for r in records})
    result = quality(records, judge, integers(top=3))
    lines = result.report()
    for name in (*DIMENSIONS, "total", "quality"):
        assert any(line.startswith(name) for line in lines)
    assert any(line.startswith("warning: the judge's totals are nearly uniform") for line in lines)
    assert result.stats["uniform_warning"] is True
    clarity = result.stats["scores"]["clarity"]
    assert (clarity["count"], clarity["mean"], clarity["std"], sum(clarity["histogram"])) == (6, 10.0, 0.0, 6)
    assert result.stats["scores"]["total"]["histogram"][7] == 6  # 75 falls in the bin 70-80


def test_summary_values_match_the_scores():
    records, judge = twenty_records()
    result = quality(records, judge, integers(top=5))
    totals = [40 + 2 * i for i in range(20)]
    total = result.stats["scores"]["total"]
    assert total["mean"] == pytest.approx(statistics.fmean(totals))
    assert total["std"] == pytest.approx(statistics.pstdev(totals))
    assert (total["min"], total["max"]) == (40, 78)
    assert result.stats["uniform_warning"] is False


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"top": 0}, "top"),
        ({"top": 1.5}, "top"),
        ({"top": 0.0}, "top"),
        ({"top": True}, "top"),
        ({"retries": -1}, "retries"),
        ({"length_percentile": 0}, "length_percentile"),
        ({"judge_weight": -0.1}, "judge_weight"),
        ({"retry_temperature": 5}, "retry_temperature"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_params_are_validated(bad, field):
    with pytest.raises(ValueError, match=field):
        QualityParams(**bad)


# --- the command ---


def test_command_writes_kept_baseline_and_scores_and_prints_distributions(cli_models, real_sample, tmp_path):
    source = real_sample("dolly_3k.json", list(range(10)))
    totals = iter(range(30, 100, 7))
    replies = {}  # each record its own total, whatever order the judge sees them in

    def respond(conversation):
        key = last_user_message(conversation)
        if key not in replies:
            replies[key] = json_reply(**scores_with_total(next(totals)))
        return replies[key]

    cli_models["judge"] = FakeChat(respond)
    out, baseline, scores = tmp_path / "kept.jsonl", tmp_path / "base.jsonl", tmp_path / "scores.jsonl"
    args = ["quality", str(source), str(out), "--top", "0.3", "--baseline", str(baseline),
            "--scores", str(scores), "--seed", "3", "--no-expected", "--cache-dir", str(tmp_path / "cache")]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output

    kept, base, scored = read_records(out), read_records(baseline), read_records(scores)
    assert len(kept) == len(base) == 3
    assert len(scored) == 10
    assert [r.meta["quality"] for r in scored] == sorted((r.meta["quality"] for r in scored), reverse=True)
    assert {r.id for r in kept} == {r.id for r in scored[:3]}
    for r in kept:
        assert r.meta["judge"]["status"] == "ok"
        assert r.meta["judge"]["total"] == sum(r.meta["judge"]["scores"].values())
        assert 0 < r.meta["length_score"] <= 100
    for name in (*DIMENSIONS, "total", "quality"):
        assert f"\n{name} " in run.output
    assert "3 of 10 records → " in run.output


def test_command_fails_clearly_when_no_reply_is_valid(cli_models, real_sample, tmp_path):
    cli_models["judge"] = FakeChat(lambda c: "I rate this 8/10.")
    out, scores = tmp_path / "kept.jsonl", tmp_path / "scores.jsonl"
    args = ["quality", str(real_sample("dolly_3k.json", [0, 1])), str(out), "--scores", str(scores),
            "--retries", "1", "--cache-dir", str(tmp_path)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 1
    assert "no valid reply for any of 2 records (2 invalid_json)" in run.output
    assert not out.exists()
    assert [r.meta["judge"]["raw"] for r in read_records(scores)] == ["I rate this 8/10."] * 2


@pytest.mark.parametrize(
    "top, message", [("abc", "neither a count nor a fraction")]  # values out of range: test_params.py
)
def test_command_rejects_a_bad_top(cli_models, real_sample, tmp_path, top, message):
    source = real_sample("dolly_3k.json", [0])
    run = CliRunner().invoke(main, ["quality", str(source), str(tmp_path / "o"), "--top", top])
    assert run.exit_code == 2
    assert message in run.output
