"""Decontamination against the bundled benchmarks: planted test items, verbatim and lightly edited
(renamed variables, changed numbers, reworded), are caught inside real records and name the item they
matched; the clean real files are flagged at a measured rate; bad options and benchmark files are errors."""

from __future__ import annotations

import json
import random

import plants
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import run_phase

from lift_local.cli import main
from lift_local.config import load_config
from lift_local.errors import ConfigError, InputError
from lift_local.phases.decontaminate import (
    BUNDLED,
    Decontaminate,
    DecontaminateParams,
    bundled_items,
    match_words,
)
from lift_local.records import Record, read_records
from lift_local.workbench import Workbench


@pytest.fixture(scope="module")
def answers():
    """Real answers to carry planted questions, so a planted record looks like the others."""
    return [r.output for r in read_records(SHARED_DATA / "code_alpaca_2k.json")]


def carrying(question: str, answers: list[str], number: int, wrap: bool = False) -> Record:
    instruction = f"Solve the following problem step by step.\n{question}\nShow your work." if wrap else question
    return Record(instruction, "", answers[number % len(answers)], f"planted-{number}")


def sample_items(name: str, count: int, min_words: int = 6, seed: int = 0):
    items = [item for item in bundled_items(name) if len(match_words(item.text)) >= min_words]
    return random.Random(seed).sample(items, min(count, len(items)))


def caught(records, items, **params):
    """(recall, attributed, outcome): the share of planted records removed, and the share of those that
    name their own item (or one of the same words: MBPP and MMLU repeat a few questions)."""
    outcome = run_phase(Decontaminate(DecontaminateParams(**params)), records)
    removed = {r.id: r.meta for r in outcome.side["removed"]}
    found = [(removed[r.id], item) for r, item in zip(records, items) if r.id in removed]
    named = sum(meta["contaminated_by"] == item.id or match_words(meta["benchmark_text"]) == match_words(item.text)
                for meta, item in found)
    return len(found) / len(records), named / max(1, len(found)), outcome


@pytest.mark.parametrize("name", BUNDLED)
def test_verbatim_items_are_caught_in_every_bundled_benchmark(name, answers):
    items = sample_items(name, 40)
    records = [carrying(item.text, answers, n, wrap=n % 2 == 1) for n, item in enumerate(items)]
    recall, attributed, outcome = caught(records, items)
    assert recall == 1.0 and attributed == 1.0
    removed = outcome.side["removed"][0]
    assert removed.meta["benchmark"] == name and removed.meta["method"] == "ngram"
    assert removed.meta["benchmark_text"] in items[0].text or items[0].text.startswith(removed.meta["benchmark_text"])
    assert outcome.stats["by_benchmark"][name] == len(items)


def test_humaneval_with_renamed_function_and_parameters_is_caught(answers):
    items = sample_items("humaneval", 80)
    records = [carrying(plants.rename_identifiers(item.text), answers, n) for n, item in enumerate(items)]
    assert records[0].instruction != items[0].text
    recall, attributed, _ = caught(records, items)
    assert attributed >= 0.95
    # Measured: 0.93. Identifiers and declared parameters are one word "_", so renaming them changes no
    # word; what is missed is short prompts whose examples are most of their words.
    assert recall >= 0.9


def test_gsm8k_with_changed_numbers_is_caught(answers):
    items = sample_items("gsm8k", 200)
    rng = random.Random(4)
    records = [carrying(plants.change_numbers(item.text, rng), answers, n) for n, item in enumerate(items)]
    recall, attributed, _ = caught(records, items)
    assert recall == 1.0 and attributed == 1.0  # every run of numbers is one word


@pytest.mark.parametrize("name, bound", [("gsm8k", 0.95), ("humaneval", 0.8), ("mmlu", 0.95)])
def test_lightly_reworded_long_items_are_caught(name, bound, answers):
    """One word in about 12 replaced, dropped or added, in items of 16 words or more (two 8-grams)."""
    items = sample_items(name, 150, min_words=16, seed=5)
    rng = random.Random(6)
    records = [carrying(plants.lightly_reworded(item.text, rng), answers, n) for n, item in enumerate(items)]
    recall, attributed, _ = caught(records, items)
    assert attributed >= 0.95
    # Measured: gsm8k 0.98, humaneval 0.84, mmlu 0.97: where two edits fall within 8 words of each other
    # the words between them are lost, and HumanEval's examples are short runs between identifiers.
    assert recall >= bound


def test_reworded_short_questions_are_caught_by_the_semantic_check(tmp_path, answers):
    """Short items reworded share no whole-item match; the embedding check finds the paraphrase."""
    items = sample_items("mbpp", 30, seed=7)
    file = tmp_path / "mbpp_sample.jsonl"
    file.write_text("".join(json.dumps({"id": item.id, "question": item.text}) + "\n" for item in items))
    rng = random.Random(8)
    reworded = [carrying(plants.reword(item.text, rng), answers, n) for n, item in enumerate(items)]
    clean = read_records(SHARED_DATA / "dolly_3k.json")[:30] + read_records(SHARED_DATA / "code_alpaca_2k.json")[:30]
    with Workbench(tmp_path / "cache") as bench:
        params = DecontaminateParams(benchmarks="none", benchmark_file=(str(file),), semantic=0.75)
        outcome = run_phase(Decontaminate(params), reworded + clean, embedder=bench.embedder())
    removed = {r.id: r.meta for r in outcome.side["removed"]}
    found = sum(removed.get(r.id, {}).get("contaminated_by") == f"mbpp_sample/{item.id}"
                for r, item in zip(reworded, items))
    # Measured (all-MiniLM-L6-v2): the reworded questions score 0.61-0.95 against their item (median 0.85),
    # the 60 clean records at most 0.67; 0.75 catches 23 of 30 and no clean record.
    assert found / len(items) >= 0.75
    assert not any(r.id in removed for r in clean)
    assert outcome.stats["by_method"]["semantic"] >= 1


def test_the_clean_real_files_are_rarely_flagged():
    clean = read_records(SHARED_DATA / "code_alpaca_2k.json") + read_records(SHARED_DATA / "dolly_3k.json")
    outcome = run_phase(Decontaminate(), clean)
    # Measured: 2 of 5,013 (0.04%), both MMLU items of six words that are stock phrases in a biography
    # ("The Voting Rights Act of 1965").
    assert outcome.stats["removed"] / len(clean) <= 0.001
    assert outcome.stats["too_short"]["mmlu"] > 0  # counted, and shown in the report


def test_semantic_off_never_loads_the_embedder(answers):
    class NoEmbedder:
        def embed(self, texts):
            raise AssertionError("the embedder was loaded")

    outcome = run_phase(Decontaminate(DecontaminateParams(benchmarks="gsm8k")), [carrying("hello there", answers, 0)],
                        embedder=NoEmbedder())
    assert outcome.stats["removed"] == 0


def test_the_command_takes_the_users_benchmark_files_csv_and_jsonl(tmp_path, answers):
    questions = ["Explain how a hash map resolves collisions with open addressing in detail.",
                 "Describe the three stages of the Krebs cycle and what each of them produces."]
    csv_file, jsonl_file = tmp_path / "mine.csv", tmp_path / "theirs.jsonl"
    csv_file.write_text(f'id,prompt\nq1,"{questions[0]}"\n')
    jsonl_file.write_text(json.dumps({"prompt": questions[1]}) + "\n")
    records = tmp_path / "in.jsonl"
    records.write_text("".join(json.dumps({"instruction": q, "output": answers[n]}) + "\n"
                               for n, q in enumerate([*questions, "Write hello world in C."])))
    out, removed = tmp_path / "out.jsonl", tmp_path / "removed.jsonl"
    result = CliRunner().invoke(main, ["decontaminate", str(records), str(out), "--benchmarks", "none",
                                       "--benchmark-file", str(csv_file), "--benchmark-file", str(jsonl_file),
                                       "--benchmark-field", "prompt", "--removed", str(removed)])
    assert result.exit_code == 0, result.output
    assert "contaminated      2 (mine 1, theirs 1)" in result.output
    assert [r.meta["contaminated_by"] for r in read_records(removed)] == ["mine/q1", "theirs/line 1"]
    assert len(read_records(out)) == 1


def test_the_config_takes_a_list_of_benchmark_files(tmp_path):
    file = tmp_path / "mine.jsonl"
    file.write_text(json.dumps({"question": "What is the airspeed velocity of an unladen swallow?"}) + "\n")
    config = tmp_path / "lift.toml"
    config.write_text(f"[decontaminate]\nbenchmark_file = [{json.dumps(str(file))}]\nbenchmarks = 'gsm8k'\n")
    (phase,) = [p for p in load_config(config).phases if p.name == "decontaminate"]
    assert phase.params.benchmark_file == (str(file),) and phase.params.files_sha256
    with pytest.raises(ConfigError, match="--set decontaminate.benchmark_file=3: must be a list of strings, got 3"):
        load_config(overrides=["decontaminate.benchmark_file=3"])


@pytest.mark.parametrize("content, suffix, message", [
    ('{"question": "fine"}\n{"text": "no question"}\n', ".jsonl",
     "theirs.jsonl:line 2: no text in field 'question' (set --benchmark-field); its fields are: text"),
    ('{"question": "fine"}\n{"question": \n', ".jsonl", "theirs.jsonl:line 2 column 14: malformed JSON"),
    ('{"question": ""}\n', ".jsonl", "theirs.jsonl:line 1: no text in field 'question'"),
    ("prompt,answer\nWhat?,42\n", ".csv", "theirs.csv:line 1: no column 'question' (set --benchmark-field); "
                                          "its columns are: prompt, answer"),
    ("", ".jsonl", "theirs.jsonl: the file is empty"),
])
def test_bad_benchmark_files_are_input_errors_naming_file_and_line(tmp_path, content, suffix, message):
    file = tmp_path / f"theirs{suffix}"
    file.write_text(content)
    with pytest.raises(InputError) as caught_error:
        DecontaminateParams(benchmark_file=(str(file),))
    assert message in str(caught_error.value)


def test_a_missing_benchmark_file_fails_the_command_before_reading_records(tmp_path, real_sample):
    sample = real_sample("code_alpaca_2k.json", [0, 1])
    result = CliRunner().invoke(main, ["decontaminate", str(sample), str(tmp_path / "o.jsonl"),
                                       "--benchmark-file", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1 and "nope.csv: no such file" in result.output


def test_no_benchmark_at_all_is_an_error(tmp_path):
    """Each parameter's own limits are walked in test_params.py; this one is about two parameters together."""
    result = CliRunner().invoke(main, ["decontaminate", str(tmp_path / "i.jsonl"), str(tmp_path / "o.jsonl"),
                                       "--benchmarks", "none"])
    assert result.exit_code == 1
    assert "Error: --benchmarks: is 'none' and there is no benchmark_file: nothing to check against" in result.output
