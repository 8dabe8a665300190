"""judge-fit's scorer: the fit, the grouped cross-validation, the scorer file, and `quality --scorer`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA
from fakes import FakeChat, json_reply

from lift_local.cli import main
from lift_local.errors import InputError, ModelError
from lift_local.judge.agreement import ScoreTable
from lift_local.judge.features import FeatureSpec, HiddenSpec, pooled
from lift_local.judge.fit import ALPHAS, FitParams, Sample, Scorer, evaluate, fit, splits
from lift_local.llm.inprocess import states_settings
from lift_local.records import Record, read_records


def synthetic(n=240, groups=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + [0.0, 10.0, -1.0]
    beta = np.array([1.5, -0.4, 3.0])
    y = X @ beta + 2.0 + rng.normal(scale=0.05, size=n)
    return X, y, beta, np.repeat(np.arange(groups), n // groups)


def test_the_fit_recovers_known_coefficients():
    X, y, beta, groups = synthetic()
    model = fit(X, y, groups)
    scaler, ridge = model.named_steps["standardscaler"], model.named_steps["ridge"]
    assert ridge.alpha in ALPHAS  # chosen by the inner cross-validation
    np.testing.assert_allclose(ridge.coef_ / scaler.scale_, beta, rtol=0.02)
    scorer = Scorer.of(model, FeatureSpec(length=True), ["a", "b", "c"], {}, {"scale": 100}, {})
    np.testing.assert_allclose(scorer.score(X), np.clip(model.predict(X), 0, 100), atol=1e-9)


def test_the_grouped_split_never_puts_one_question_on_both_sides():
    groups = np.random.default_rng(1).integers(0, 23, size=300)
    for seed in range(3):
        folds = splits(groups, 5, seed)
        assert sorted(np.concatenate([test for _, test in folds])) == list(range(300))  # each record tested once
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test])


def sample(n_groups=12, per_group=3, constant=False):
    records = [Record(f"question {g}", "", f"answer {g}.{k} " + "word " * (g + k), id=f"r{g}-{k}")
               for g in range(n_groups) for k in range(per_group)]
    scores = {r.id: 50.0 if constant else 10.0 * (int(r.id[1:].split("-")[0]) % 10) for r in records}
    return records, ScoreTable("ref", "ref", scores, {}, frozenset())


@pytest.mark.parametrize("n_groups, folds, constant, message", [
    (4, 5, False, "12 records answer 4 distinct instructions, fewer than the 5 folds"),
    (12, 5, True, "every one of the 36 reference scores is 5: there is nothing to learn to rank"),
])
def test_a_sample_too_small_or_too_uniform_is_an_error(n_groups, folds, constant, message):
    records, reference = sample(n_groups, constant=constant)
    with pytest.raises(InputError, match=message):
        Sample.of("ref.jsonl", records, reference, 10.0, folds)


def test_the_evaluation_is_out_of_fold_and_leaves_out_records_a_judge_failed():
    records, reference = sample(20, 4)
    X = np.log1p([[len(r.output)] for r in records]) + np.random.default_rng(0).normal(scale=0.01, size=(80, 1))
    X[3, 0] = np.nan  # a judge gave this record no valid verdict
    result = evaluate(Sample.of("ref.jsonl", records, reference, 10.0, 5), X, FitParams(folds=5), FeatureSpec(length=True))
    assert result.unusable == 1 and records[3].id in result.table.unscored and len(result.table.totals) == 79
    assert result.cross_validation["folds"] == 5 and result.sizes == {"records": 79, "instructions": 20}


def write_scorer(path, **changes):
    X, y, _, groups = synthetic()
    scorer = Scorer.of(fit(X, y, groups), FeatureSpec(length=True), ["a", "b", "c"],
                       {"reader": {"smollm2-135m-instruct": "0" * 64}}, {"scale": 100.0, "field": "score"}, {})
    scorer.save(path)
    data = json.loads(path.read_text())
    for key, value in changes.items():
        owner, _, field = key.rpartition(".")
        (data[owner] if owner else data)[field] = value
    path.write_text(json.dumps(data))
    return scorer


def test_the_scorer_file_round_trips(tmp_path):
    scorer = write_scorer(tmp_path / "s.json")
    assert Scorer.load(tmp_path / "s.json") == scorer


@pytest.mark.parametrize("changes, message", [
    ({"format": "a scorer"}, "format: not a lift-local scorer"),
    ({"ridge.coef": [1.0, 2.0]}, "ridge.coef: has 2 numbers for the 3 columns"),
    ({"scaler.scale": [1.0, 0.0, 1.0]}, "scaler.scale: must be positive"),
    ({"scaler.mean": [1.0, "x", 2.0]}, "scaler.mean: must be a list of finite numbers"),
    ({"features.length": "yes"}, "features.length: must be true or false, got 'yes'"),
    ({"features.judges": [3]}, "features.judges: must be a list of model names"),
    ({"reference.scale": 0}, "reference.scale: must be positive"),
    ({"models.reader": {"smollm2-135m-instruct": "abc"}}, "models.reader: must map model names to the 64-digit digests"),
])
def test_a_scorer_file_edited_into_nonsense_is_a_clear_error(tmp_path, changes, message):
    write_scorer(tmp_path / "s.json", **changes)
    with pytest.raises(InputError) as raised:
        Scorer.load(tmp_path / "s.json")
    assert str(raised.value) == f"{tmp_path / 's.json'}:{message}" or message in str(raised.value)
    assert str(raised.value).startswith(str(tmp_path / "s.json"))


def test_a_scorer_refuses_models_that_differ(tmp_path):
    scorer = write_scorer(tmp_path / "s.json")

    class Kit:
        def chats(self, role):
            return []

        def digest(self, role, name):
            return "1" * 64

    scorer = Scorer(**{**scorer.__dict__, "spec": FeatureSpec(hidden=HiddenSpec("smollm2-135m-instruct", 15))})
    with pytest.raises(ModelError, match="the scorer reads the reader smollm2-135m-instruct, whose weights here "
                                         r"\(digest 111111111111\) differ from those it was fitted with \(000000000000\)"):
        scorer.check_models(Kit())


def test_quality_refuses_a_scorer_whose_judges_are_not_the_runs(tmp_path, cli_models):
    path = tmp_path / "s.json"
    write_scorer(path)
    data = json.loads(path.read_text())
    data["features"]["judges"] = ["some-7b-judge"]
    data["columns"] = data["columns"]
    path.write_text(json.dumps(data))
    cli_models["judge"] = FakeChat(lambda c: json_reply(clarity=1, difficulty=1, explanation=1, accuracy=1))
    (tmp_path / "in.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    result = CliRunner().invoke(main, ["quality", str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"),
                                       "--scorer", str(path), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the scorer reads the verdicts of the judge(s) some-7b-judge, but the judge(s) here are" in result.output


def test_quality_names_a_file_that_is_no_scorer(tmp_path):
    (tmp_path / "s.json").write_text("{}")
    result = CliRunner().invoke(main, ["quality", "in.jsonl", str(tmp_path / "o.jsonl"), "--scorer", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert f"Error: --scorer: {tmp_path / 's.json'}:format: not a lift-local scorer" in result.output


@pytest.mark.parametrize("reference, options, message", [
    ([{"instruction": "q", "output": "a"}] * 3, [], "no field 'gpt4_score'"),
])
def test_judge_fit_refuses_a_reference_without_scores(tmp_path, reference, options, message):
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps({**row, "id": f"r{i}"}) + "\n" for i, row in enumerate(reference)))
    result = CliRunner().invoke(main, ["judge-fit", str(path), "--out", str(tmp_path / "s.json"), *options])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists()


def test_judge_fit_refuses_fewer_instructions_than_folds(tmp_path):
    rows = [json.loads(line) for line in (SHARED_DATA / "mt_bench_gpt4.jsonl").read_text().splitlines()]
    three = sorted({row["instruction"] for row in rows})[:3]
    rows = [row for row in rows if row["instruction"] in three]  # every model's answer to three questions
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(main, ["judge-fit", str(path), "--out", str(tmp_path / "s.json"), "--folds", "5",
                                       "--features", "length"])
    assert result.exit_code == 1
    assert f"{len(rows)} records answer 3 distinct instructions, fewer than the 5 folds" in result.output



@pytest.mark.parametrize("pooling, start, end, rows", [
    ("mean", 1, 3, [0, 1, 2, 3]), ("answer", 1, 3, [1, 2]), ("last", 1, 3, [3]),
    ("answer", 2, 2, [0, 1, 2, 3]), ("last", 2, 2, [0, 1, 2, 3]),  # an empty answer: every token
])
def test_pooling_takes_the_tokens_it_names(pooling, start, end, rows):
    states = np.arange(12, dtype=np.float32).reshape(4, 3) ** 2
    np.testing.assert_allclose(pooled(states, start, end, pooling), states[rows].mean(axis=0))


def test_the_reader_engine_is_cut_after_the_layer_read(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "layer_types": ["full", "sliding"] * 2}))
    settings = states_settings(tmp_path, 3)
    assert settings["hf_overrides"] == {"num_hidden_layers": 3, "layer_types": ["full", "sliding", "full"]}
    assert settings["runner"] == "pooling" and settings["pooler_config"]["use_activation"] is False


@pytest.mark.vllm
@pytest.mark.model
def test_the_readers_states_are_its_layers_output_under_the_final_norm():
    """vLLM's cut model gives, token by token, what the whole model computes at that layer (transformers'
    hidden_states[15] of 30) under its final norm."""
    import torch
    from transformers import AutoModelForCausalLM

    from lift_local import models
    from lift_local.judge.features import HiddenStates, encode, question

    folder = models.ensure_present(models.resolve("reader"))
    reader = HiddenStates(folder, HiddenSpec("smollm2-135m-instruct", 15, "answer", 128))
    tokenizer, engine = reader._load()
    chats = [encode(tokenizer, question(r), r.output, 128) for r in read_records(SHARED_DATA / "mt_bench_gpt4.jsonl")[:3]]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, reader.dtype))
    for (tokens, _, _), states in zip(chats, engine.states([tokens for tokens, _, _ in chats])):
        with torch.inference_mode():
            layer = model(input_ids=torch.tensor([tokens]), output_hidden_states=True).hidden_states[15]
            wanted = model.model.norm(layer)[0].float().numpy()
        assert states.shape == wanted.shape == (len(tokens), 576)
        cosines = np.sum(states * wanted, axis=1) / np.linalg.norm(states, axis=1) / np.linalg.norm(wanted, axis=1)
        assert cosines.min() > 0.99

@pytest.mark.vllm
def test_quality_ranks_by_a_scorer_fitted_on_a_real_readers_hidden_states(tmp_path, cli_models):
    """judge-fit on 40 real GPT-4-scored answers with SmolLM2's hidden states (vLLM's pooling runner, a middle layer)
    and the lengths; then `quality --scorer` keeps the records with the best fitted score, as computed here."""
    rows = [json.loads(line) for line in (SHARED_DATA / "mt_bench_gpt4.jsonl").read_text().splitlines()]
    questions = sorted({row["instruction"] for row in rows})[:8]
    reference = tmp_path / "ref.jsonl"
    reference.write_text("".join(json.dumps(row) + "\n" for row in rows if row["instruction"] in questions))
    cache = str(tmp_path / "cache")
    cli_models["judge"] = FakeChat(lambda c: json_reply(clarity=5, difficulty=5, explanation=5, accuracy=5))
    fitted = CliRunner().invoke(main, ["judge-fit", str(reference), "--out", str(tmp_path / "s.json"),
                                       "--folds", "4", "--max-tokens", "64", "--cache-dir", cache])  # length,hidden
    assert fitted.exit_code == 0, fitted.output
    assert "scorer (length + hidden), 4-fold out-of-fold   40" in fitted.output
    assert "smollm2-135m-instruct: expected total" in fitted.output  # the raw judge's row beside it
    scorer = Scorer.load(tmp_path / "s.json")
    assert scorer.spec.hidden == HiddenSpec("smollm2-135m-instruct", 15, "answer", 64)  # 30 layers: the middle one
    assert len(scorer.columns) == 2 + 576 and set(scorer.models) == {"reader"}

    records = read_records(SHARED_DATA / "dolly_3k.json")[:6]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    result = CliRunner().invoke(main, ["quality", str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"), "--top", "2",
                                       "--scorer", str(tmp_path / "s.json"), "--scores", str(tmp_path / "scores.jsonl"),
                                       "--cache-dir", cache])
    assert result.exit_code == 0, result.output

    from lift_local import models
    from lift_local.judge.features import HiddenStates, length_features
    from lift_local.judge.protocol import length_score, record_length

    reader = HiddenStates(models.ensure_present(models.resolve("reader")), scorer.spec.hidden)
    by_hand = scorer.score(np.hstack([length_features(records), reader.features(records)]))
    threshold = np.percentile([record_length(r) for r in records], 98)
    quality = {r.id: 0.9 * s + 0.1 * length_score(record_length(r), threshold) for r, s in zip(records, by_hand)}
    scored = read_records(tmp_path / "scores.jsonl")
    for record in scored:
        assert record.meta["by"] == "scorer" and record.meta["judge"]["status"] == "ok"  # the judge's own verdict stays
        assert record.meta["judge_score"] == pytest.approx(by_hand[[r.id for r in records].index(record.id)], abs=1e-4)
    best = sorted(quality, key=quality.get, reverse=True)[:2]
    assert {r.id for r in read_records(tmp_path / "o.jsonl")} == set(best)


def test_judge_eval_ranks_a_scorer_beside_the_judges(tmp_path, cli_models):
    """A scorer fitted on one sample, evaluated on another (transfer): one more row of judge-eval's table."""
    rows = [json.loads(line) for line in (SHARED_DATA / "mt_bench_gpt4.jsonl").read_text().splitlines()]
    first, second = sorted({row["instruction"] for row in rows})[:12], sorted({row["instruction"] for row in rows})[12:20]
    for name, questions in (("fit", first), ("other", second)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["instruction"] in questions))
    cli_models["judge"] = FakeChat(lambda c: json_reply(clarity=5, difficulty=5, explanation=5, accuracy=5))
    cache = str(tmp_path / "cache")
    fitted = CliRunner().invoke(main, ["judge-fit", str(tmp_path / "fit.jsonl"), "--out", str(tmp_path / "s.json"),
                                       "--features", "length", "--folds", "3", "--cache-dir", cache])
    assert fitted.exit_code == 0, fitted.output
    result = CliRunner().invoke(main, ["judge-eval", str(tmp_path / "other.jsonl"), "--scorer", str(tmp_path / "s.json"),
                                       "--no-expected", "--cache-dir", cache])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("scorer s.json: fitted score"))
    assert int(row.split()[4]) == 40  # n: every answer of the other eight questions


def test_judge_eval_needs_a_judge_or_a_scorer(tmp_path):
    result = CliRunner().invoke(main, ["judge-eval", str(tmp_path / "ref.jsonl")])
    assert result.exit_code == 2 and "give at least one --judge or --scorer" in result.output
