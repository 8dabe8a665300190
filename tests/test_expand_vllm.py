"""Expansion end to end through the CLI with the real SmolLM2 model in vLLM, on real Dolly records."""

import pytest
from click.testing import CliRunner

from lift_local.cli import main
from lift_local.records import content_id, read_records

pytestmark = pytest.mark.vllm


def test_expand_command_two_rounds_with_real_model(smollm, real_sample, tmp_path):
    source = real_sample("dolly_3k.json", [1, 4, 9, 16, 25, 36])
    out = tmp_path / "expanded.jsonl"
    args = ["expand", str(source), str(out), "--task", "nlu", "--rounds", "2", "--rewriter", smollm.name,
            "--cache-dir", str(tmp_path / "cache"), "--max-tokens", "160",
            "--temperature", "0"]  # greedy: deterministic, as vLLM on CPU takes no per-request seed
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output

    originals, records = read_records(source), read_records(out)
    assert records[:6] == originals  # the input comes first, unchanged
    new = records[6:]
    assert new, f"the rewriter produced no usable record:\n{run.output}"
    ids_by_round = {0: {r.id for r in originals}}
    for r in new:
        assert (r.meta["origin"], r.meta["task"], r.meta["rewriter"]) == ("expanded", "nlu", smollm.name)
        assert r.meta["parent"] in ids_by_round[r.meta["round"] - 1]  # rewritten from the previous round
        assert r.meta["root"] in ids_by_round[0]
        assert r.id == content_id(r.instruction, r.input, r.output)
        assert r.instruction.strip() and r.output.strip()
        ids_by_round.setdefault(r.meta["round"], set()).add(r.id)
    assert len({r.id for r in records}) == len(records)

    # Every rewrite is accounted for: the summary's rounds add up to what was written.
    summary = [line for line in run.output.splitlines() if line.startswith("round ")]
    assert summary[0].startswith("round 1: 6 rewritten, ")
    new_per_round = [int(line.split(", ")[1].split()[0]) for line in summary]
    assert sum(new_per_round) == len(new)
