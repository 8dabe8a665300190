"""Behaviour kept across refactors: `lift-local run` with fake LLMs and the real embedder on a fixed real
sample must curate exactly the records, and count exactly what, it did when `golden/run.json` was written.

The fakes exercise every path that decides what is kept: rewrites that repeat one another (duplicates),
judge replies that never parse (failures after retries), and scores that differ from record to record.
"""

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner
from fakes import FakeChat, json_reply, last_user_message

from lift_local.cli import main
from lift_local.prompts import load_prompt
from lift_local.records import read_records

GOLDEN = Path(__file__).resolve().parent / "golden" / "run.json"
REWRITE_SYSTEM = load_prompt("expand_code").system


def _hash(conversation) -> int:
    return int(hashlib.sha256(last_user_message(conversation).encode()).hexdigest(), 16)


def rewriter_reply(conversation):
    h = _hash(conversation)
    if conversation[0]["content"] == REWRITE_SYSTEM:
        if h % 5 == 0:  # the same rewrite for many parents: duplicates
            return "Rewritten prompt: Write a function that reverses a list in place.\nInput: [1, 2, 3]"
        return f"Harder task {h % 10**8}: solve it in O(n) without recursion."
    return f"A careful answer of {h % 997} steps, after reading: {last_user_message(conversation)[:60]}"


def judge_reply(conversation):
    h = _hash(conversation)
    if h % 9 == 0:
        return "I cannot score this."  # never parses, however often it is asked
    return json_reply(clarity=h % 16, difficulty=h % 26, explanation=(h // 7) % 26, accuracy=(h // 11) % 36)


def observe(sample: Path, out: Path, cli_models) -> dict:
    cli_models["rewriter"] = FakeChat(rewriter_reply, name="fake-rewriter")
    cli_models["judge"] = FakeChat(judge_reply, name="fake-judge")
    argv = ["run", str(sample), "--out", str(out), "--set", "expand.task='code'", "--set", "expand.rounds=2",
            "--set", "variety.keep=0.5", "--set", "quality.top=12", "--set", "quality.expected=false"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    phases = manifest["phases"]
    return {
        "curated_ids": [r.id for r in read_records(out / "curated.jsonl")],
        "counts": {name: [p["records_in"], p["records_out"]] for name, p in phases.items()},
        "enhance": phases["enhance"]["stats"]["ok"],
        "expand_rounds": phases["expand"]["stats"]["rounds"],
        "variety_components": phases["variety"]["stats"]["n_components"],
        "quality": {key: phases["quality"]["stats"][key] for key in ("ok", "failed", "kept")},
    }


def test_run_curates_what_it_curated_before(tmp_path, real_sample, cli_models):
    sample = real_sample("code_alpaca_2k.json", list(range(300, 340)))  # 40 real Code Alpaca records
    assert observe(sample, tmp_path / "run", cli_models) == json.loads(GOLDEN.read_text())
