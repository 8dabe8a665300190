"""Enhancement with a fake rewriter: new answers, originals kept, unusable replies counted and not applied."""

import pytest
from click.testing import CliRunner
from fakes import FakeChat, last_user_message, run_phase

from lift_local.cli import main
from lift_local.llm import PROMPT_TOO_LONG
from lift_local.phases.enhance import Enhance, EnhanceParams
from lift_local.records import Record, content_id, read_records


def record(instruction, input="", output="old answer"):
    return Record(instruction, input, output, id=content_id(instruction, input, output),
                  meta={"origin": "original", "source": {"file": "x.json", "index": 0}})



def enhance(records, rewriter, params):
    return run_phase(Enhance(params), records, rewriter=rewriter)


def test_every_record_gets_a_new_answer_and_keeps_its_original_and_provenance():
    records = [record("Add 1 and 2."), record("Reverse a list.", "[1, 2]")]
    rewriter = FakeChat(lambda c: f"  better answer to: {last_user_message(c)}\n")
    result = enhance(records, rewriter, EnhanceParams())
    assert [r.output for r in result.records] == [
        "better answer to: Add 1 and 2.",
        "better answer to: Reverse a list.\n\nInput:\n[1, 2]",
    ]
    for before, after in zip(records, result.records):
        assert after.id == before.id  # the record is the same one, traceable to its source
        assert after.instruction == before.instruction and after.input == before.input
        assert after.meta["origin"] == "original" and after.meta["source"] == before.meta["source"]
        assert after.meta["original_output"] == "old answer"
        assert after.meta["enhance_status"] == "ok"
        assert after.meta["enhanced_by"] == "fake-chat"
    assert result.stats == {"records": 2, "ok": 2, "unchanged": {}}


def test_all_records_go_in_one_call_with_the_params_sampling():
    records = [record(f"Task {i}.") for i in range(5)]
    rewriter = FakeChat(lambda c: "answer")
    enhance(records, rewriter, EnhanceParams(temperature=0.3, max_tokens=77, seed=5))
    assert len(rewriter.calls) == 1
    call = rewriter.calls[0]
    assert len(call.conversations) == 5
    assert (call.sampling.temperature, call.sampling.max_tokens, call.sampling.seed) == (0.3, 77, 5)
    assert call.json_schema is None


def test_empty_replies_keep_the_original_answer_and_are_counted():
    replies = {"A.": "fine", "B.": "   \n", "C.": ""}
    rewriter = FakeChat(lambda c: replies[last_user_message(c)])
    result = enhance([record(i) for i in replies], rewriter, EnhanceParams())
    assert [r.output for r in result.records] == ["fine", "old answer", "old answer"]
    assert [r.meta["enhance_status"] for r in result.records] == ["ok", "empty", "empty"]
    assert result.stats == {"records": 3, "ok": 1, "unchanged": {"empty": 2}}


def test_replies_cut_off_at_max_tokens_keep_the_original_answer_and_are_counted():
    rewriter = FakeChat(lambda c: "half an ans", finish_reason="length")
    result = enhance([record("A."), record("B.")], rewriter, EnhanceParams())
    assert [r.output for r in result.records] == ["old answer", "old answer"]
    assert [r.meta["enhance_status"] for r in result.records] == ["truncated", "truncated"]
    assert result.stats == {"records": 2, "ok": 0, "unchanged": {"truncated": 2}}


def test_a_prompt_too_long_for_the_model_keeps_the_original_answer_and_is_counted():
    rewriter = FakeChat(lambda c: "", finish_reason=PROMPT_TOO_LONG)
    result = enhance([record("A.")], rewriter, EnhanceParams())
    assert result.records[0].output == "old answer"
    assert result.stats["unchanged"] == {"prompt_too_long": 1}


def test_enhancing_twice_keeps_the_first_original_answer():
    once = enhance([record("A.")], FakeChat(["first"]), EnhanceParams()).records
    twice = enhance(once, FakeChat(["second"]), EnhanceParams()).records
    assert twice[0].output == "second"
    assert twice[0].meta["original_output"] == "old answer"


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"temperature": 2.5}, {"max_tokens": 0}])
def test_params_are_validated(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EnhanceParams(**bad)


# --- the command ---


def test_command_writes_records_and_a_rerun_is_answered_from_the_cache(cli_models, real_sample, tmp_path):
    source = real_sample("code_alpaca_2k.json", [0, 1, 2])
    out = tmp_path / "out.jsonl"
    args = ["enhance", str(source), str(out), "--cache-dir", str(tmp_path / "cache"), "--max-tokens", "64"]
    cli_models["rewriter"] = FakeChat(lambda c: "A better answer.")
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "enhanced 3 of 3 records" in run.output
    originals, enhanced = read_records(source), read_records(out)
    assert [r.output for r in enhanced] == ["A better answer."] * 3
    assert [r.meta["original_output"] for r in enhanced] == [r.output for r in originals]
    assert [r.id for r in enhanced] == [r.id for r in originals]
    assert cli_models["rewriter"].calls[0].sampling.max_tokens == 64

    cli_models["rewriter"] = FakeChat([])  # fails if asked anything: every reply must come from the cache
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert cli_models["rewriter"].calls == []


def test_command_reports_unusable_replies(cli_models, real_sample, tmp_path):
    cli_models["rewriter"] = FakeChat(lambda c: "cut", finish_reason="length")
    source = real_sample("dolly_3k.json", [0, 1])
    args = ["enhance", str(source), str(tmp_path / "o.jsonl"), "--cache-dir", str(tmp_path)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "kept the original answer of 2 (2 truncated)" in run.output


def test_command_rejects_a_bad_prompt_file_before_loading_a_model(cli_models, real_sample, tmp_path):
    prompt = tmp_path / "mine.toml"
    prompt.write_text('system = "x"\nuser = "$instruction $inptu"\n', encoding="utf-8")
    source = real_sample("dolly_3k.json", [0])
    args = ["enhance", str(source), str(tmp_path / "o.jsonl"), "--prompt", str(prompt)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 1
    assert f"{prompt}: 'user' uses unknown placeholder(s) $inptu" in run.output
    assert "Traceback" not in run.output
    assert not (tmp_path / "o.jsonl").exists()
