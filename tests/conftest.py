"""Fixtures shared by test modules: the real SmolLM2 engine for `vllm` tests, and fakes behind the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the project's real data sets
SMOLLM = "smollm2-135m-instruct"  # the packaged registry's CPU model


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct in an in-process vLLM engine, started once for the whole test session.

    It is the engine `load_chat_model` keeps for this model, so CLI commands run in the same process
    (click's CliRunner) with `--rewriter/--judge smollm2-135m-instruct` reuse it instead of starting another.
    """
    from lift_local.llm import load_chat_model
    from lift_local.llm.inprocess import close_engines

    model = load_chat_model("rewriter", SMOLLM)
    yield model
    close_engines()


@pytest.fixture
def cli_models(monkeypatch):
    """Makes the CLI's models fakes: a test sets `cli_models["judge"] = FakeChat(...)` (or "rewriter")."""
    chosen: dict = {}

    def load(role, override=None, **options):
        return chosen[role]

    monkeypatch.setattr("lift_local.llm.load_chat_model", load)
    return chosen


@pytest.fixture
def real_sample(tmp_path):
    """Writes chosen records of a real data set in SHARED_DATA to a small Alpaca JSON file in tmp_path."""

    def write(name: str, indices: list[int]) -> Path:
        items = json.loads((SHARED_DATA / name).read_text(encoding="utf-8"))
        path = tmp_path / f"sample_{name}"
        path.write_text(json.dumps([items[i] for i in indices]), encoding="utf-8")
        return path

    return write
