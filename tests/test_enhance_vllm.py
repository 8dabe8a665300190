"""Enhancement end to end through the CLI with the real SmolLM2 model in vLLM, on real Code Alpaca records."""

import pytest
from click.testing import CliRunner

from lift_local.cli import main
from lift_local.records import read_records

pytestmark = pytest.mark.vllm


def test_enhance_command_with_real_model_then_resume_from_cache(smollm, real_sample, tmp_path, monkeypatch):
    source = real_sample("code_alpaca_2k.json", [0, 2, 5, 8, 13, 21])
    out, cache = tmp_path / "enhanced.jsonl", tmp_path / "cache"
    args = ["enhance", str(source), str(out), "--rewriter", smollm.name, "--cache-dir", str(cache),
            "--max-tokens", "96", "--temperature", "0"]  # greedy: deterministic, as vLLM on CPU takes no seed
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output

    originals, enhanced = read_records(source), read_records(out)
    assert [r.id for r in enhanced] == [r.id for r in originals]
    statuses = [r.meta["enhance_status"] for r in enhanced]
    assert set(statuses) <= {"ok", "empty", "truncated"}
    assert f"enhanced {statuses.count('ok')} of 6 records" in run.output
    for before, after in zip(originals, enhanced):
        assert after.meta["original_output"] == before.output
        assert after.meta["enhanced_by"] == smollm.name
        if after.meta["enhance_status"] == "ok":
            assert after.output.strip()
        else:
            assert after.output == before.output
    assert any(a.meta["enhance_status"] == "ok" and a.output != b.output for a, b in zip(enhanced, originals))

    # The same command again: every reply comes from the cache, nothing reaches the engine.
    calls = []
    monkeypatch.setattr(smollm, "chat", lambda *a, **k: calls.append(a) or [])
    first = out.read_bytes()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert calls == []
    assert out.read_bytes() == first
