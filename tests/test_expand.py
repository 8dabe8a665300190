"""Expansion with a fake rewriter: provenance over rounds, batching, and every unusable rewrite counted."""

import pytest
from click.testing import CliRunner
from fakes import FakeChat, last_user_message, run_phase

from lift_local.cli import main
from lift_local.llm import PROMPT_TOO_LONG
from lift_local.phases.expand import Expand, ExpandParams, parse_rewrite
from lift_local.prompts import load_prompt
from lift_local.records import Record, content_id, read_records

REWRITE = load_prompt("expand_nlu")


def expand(records, rewriter, params):
    return run_phase(Expand(params), records, rewriter=rewriter)


def record(instruction, input="", output="an answer"):
    record_id = content_id(instruction, input, output)
    return Record(instruction, input, output, id=record_id, meta={"origin": "original"})


def is_rewrite(conversation):
    return conversation[0]["content"] == REWRITE.system


def rewritten(conversation):
    """(instruction, input) of the prompt a rewrite conversation asks to rewrite."""
    body = last_user_message(conversation).removeprefix("Prompt:\n").removesuffix("\nRewritten prompt:")
    instruction, _, input = body.partition("\nInput:\n")
    return instruction, input


def harder(conversation):
    """Rewrites X into 'Harder: X' (input 'I' into 'I+'), and answers anything with 'Answer to: ...'."""
    if not is_rewrite(conversation):
        return f"Answer to: {last_user_message(conversation)}"
    instruction, input = rewritten(conversation)
    return f"Rewritten prompt: Harder: {instruction}" + (f"\nInput:\n{input}+" if input else "")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Explain X in three steps.", ("Explain X in three steps.", "")),
        ("  Sort the list.\nInput:\n[3, 1, 2]\n", ("Sort the list.", "[3, 1, 2]")),
        ("Rewritten prompt: Sort it.\n### Input: [1]", ("Sort it.", "[1]")),
        ("**Rewritten Task**:\nSort it.\n**Input:** [1]", ("Sort it.", "[1]")),
        ("Parse it.\nInput: a.csv\nInput: b.csv", ("Parse it.", "a.csv\nInput: b.csv")),  # the first marker
        ("Count the inputs: there are 3.", ("Count the inputs: there are 3.", "")),  # not at a line start
        ("Rewritten prompt:\n\n", ("", "")),
        ("Input: [1, 2]", ("", "[1, 2]")),
    ],
)
def test_parse_rewrite(reply, expected):
    assert parse_rewrite(reply) == expected


def test_two_rounds_give_each_new_record_its_round_parent_root_and_content_id():
    originals = [record("Why is the sky blue?"), record("Sum the list.", "[1, 2]")]
    rewriter = FakeChat(harder, name="rw")
    result = expand(originals, rewriter, ExpandParams(rounds=2, task="nlu"))

    assert result.records[:2] == originals  # the input comes first, unchanged
    round1, round2 = result.records[2:4], result.records[4:]
    assert [(r.instruction, r.input) for r in round1] == [
        ("Harder: Why is the sky blue?", ""),
        ("Harder: Sum the list.", "[1, 2]+"),
    ]
    assert [(r.instruction, r.input) for r in round2] == [
        ("Harder: Harder: Why is the sky blue?", ""),
        ("Harder: Harder: Sum the list.", "[1, 2]++"),
    ]
    assert round2[1].output == "Answer to: Harder: Harder: Sum the list.\n\nInput:\n[1, 2]++"
    for number, new, parents in ((1, round1, originals), (2, round2, round1)):
        for child, parent, original in zip(new, parents, originals):
            assert child.meta == {
                "origin": "expanded",
                "round": number,
                "parent": parent.id,
                "root": original.id,
                "task": "nlu",
                "rewriter": "rw",
            }
            assert child.id == content_id(child.instruction, child.input, child.output)
    assert len({r.id for r in result.records}) == 6
    assert [(r["round"], r["parents"], r["new"], r["unusable"]) for r in result.stats["rounds"]] == [
        (1, 2, 2, {}),
        (2, 2, 2, {}),
    ]


def test_each_round_makes_one_call_for_all_rewrites_then_one_for_all_answers():
    rewriter = FakeChat(harder)
    params = ExpandParams(rounds=2, temperature=0.2, max_tokens=50, seed=9)
    expand([record(f"Task {i}.") for i in range(3)], rewriter, params)
    calls = [(all(map(is_rewrite, call.conversations)), len(call.conversations)) for call in rewriter.calls]
    assert calls == [(True, 3), (False, 3), (True, 3), (False, 3)]
    samplings = {(c.sampling.temperature, c.sampling.max_tokens, c.sampling.seed) for c in rewriter.calls}
    assert samplings == {(0.2, 50, 9)}


def test_unusable_rewrites_are_counted_per_reason_and_not_expanded_further():
    rewrites = {
        "Blank.": "Rewritten prompt:   ",
        "Same.": "  same. ",  # differs only in case and spacing
        "Twin one.": "A shared task.",
        "Twin two.": "A shared task.",  # the same rewrite twice in one round
        "Old.": "Blank.",  # already in the data set
        "Mute.": "A task nobody answers.",
        "Good.": "A good harder task.",
    }

    def respond(conversation):
        if is_rewrite(conversation):
            return rewrites[rewritten(conversation)[0]]
        return "" if "nobody" in last_user_message(conversation) else "An answer."

    rewriter = FakeChat(respond)
    result = expand([record(i) for i in rewrites], rewriter, ExpandParams(rounds=1))
    [report] = result.stats["rounds"]
    counts = {"rewrite_empty": 1, "rewrite_identical": 1, "duplicate": 2, "answer_empty": 1}
    assert report["unusable"] == counts
    assert report["parents"] == 7 and report["new"] == 2
    assert [r.instruction for r in result.records[7:]] == ["A shared task.", "A good harder task."]
    assert len(rewriter.calls[1].conversations) == 3  # only usable rewrites are answered
    assert result.stats["rounds"] == [{"round": 1, "parents": 7, "new": 2, "unusable": counts}]


def test_rewrites_cut_off_at_max_tokens_are_counted_and_expansion_stops_when_nothing_is_left():
    rewriter = FakeChat(harder, finish_reason="length")
    result = expand([record("A."), record("B.")], rewriter, ExpandParams(rounds=3))
    [report] = result.stats["rounds"]  # round 1 left nothing for round 2 to rewrite
    assert (report["parents"], report["new"], report["unusable"]) == (2, 0, {"rewrite_truncated": 2})
    assert len(result.records) == 2


def test_records_too_long_for_the_model_are_counted():
    rewriter = FakeChat(lambda c: "", finish_reason=PROMPT_TOO_LONG)
    result = expand([record("A.")], rewriter, ExpandParams())
    assert result.stats["rounds"][0]["unusable"] == {"rewrite_prompt_too_long": 1}


class TruncatesAnswers(FakeChat):
    """Rewrites finish normally; every answer is cut off at max_tokens."""

    def chat(self, conversations, sampling, json_schema=None, on_reply=None, label=""):
        self.finish_reason = "stop" if all(map(is_rewrite, conversations)) else "length"
        return super().chat(conversations, sampling, json_schema, on_reply, label)


def test_answers_cut_off_at_max_tokens_are_counted():
    result = expand([record("A."), record("B.")], TruncatesAnswers(harder), ExpandParams())
    assert result.stats["rounds"][0]["unusable"] == {"answer_truncated": 2}
    assert result.stats["new"] == 0


@pytest.mark.parametrize(
    "bad, field", [({"rounds": 0}, "rounds"), ({"task": "math"}, "task"), ({"temperature": 3}, "temperature")]
)
def test_params_are_validated(bad, field):
    with pytest.raises(ValueError, match=field):
        ExpandParams(**bad)


# --- the command ---


def test_command_writes_input_plus_every_round_and_reports_each_round(cli_models, real_sample, tmp_path):
    source = real_sample("code_alpaca_2k.json", [3, 4, 5])
    out = tmp_path / "out.jsonl"
    code_rewrite = load_prompt("expand_code").system

    def respond(conversation):
        if conversation[0]["content"] != code_rewrite:
            return "An answer."
        return "Rewritten task: Harder: " + last_user_message(conversation).split("\n")[1]  # after "Task:"

    cli_models["rewriter"] = FakeChat(respond)
    args = ["expand", str(source), str(out), "--task", "code", "--rounds", "2", "--cache-dir", str(tmp_path)]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    records = read_records(out)
    assert len(records) == 9
    assert [r.meta["origin"] for r in records] == ["original"] * 3 + ["expanded"] * 6
    assert [r.meta.get("round") for r in records[3:]] == [1, 1, 1, 2, 2, 2]
    assert all(r.instruction.startswith("Harder: Harder: ") for r in records[6:])
    assert "3 records + 6 new = 9" in run.output
    assert "round 2: 3 rewritten, 3 new records, unusable: none" in run.output


def test_command_needs_the_task_type(cli_models, real_sample, tmp_path):
    source = real_sample("dolly_3k.json", [0])
    run = CliRunner().invoke(main, ["expand", str(source), str(tmp_path / "o.jsonl")])
    assert run.exit_code == 2
    assert "Missing option '--task'" in run.output
