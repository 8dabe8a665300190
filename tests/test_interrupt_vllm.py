"""Stopping `lift-local` with SIGTERM mid-phase: the replies already received stay stored, the vLLM engine
processes go away with it, and the same command started again asks only for the rest."""

import subprocess
import time

import psutil
import pytest
from click.testing import CliRunner
from conftest import LIFT_LOCAL, REPO, engine_processes, stored_replies

from lift_local.cli import main

pytestmark = pytest.mark.vllm
# The replies are generated in one batch and stored as each ends: measured on these records, the third ends
# after about 30 tokens and half run to MAX_TOKENS, so the command is stopped a hundred decoding steps
# (seconds) before its last reply.
RECORDS, MAX_TOKENS = 24, 128


def test_sigterm_keeps_finished_replies_and_leaves_no_engine_behind(tmp_path, real_sample, smollm, monkeypatch):
    sample = real_sample("dolly_3k.json", list(range(RECORDS)))
    cache = tmp_path / "cache"
    args = ["enhance", str(sample), str(tmp_path / "out.jsonl"), "--cache-dir", str(cache),
            "--max-tokens", str(MAX_TOKENS)]
    process = subprocess.Popen([*LIFT_LOCAL, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=engine_processes())
    deadline = time.monotonic() + 600  # a slow start on a busy machine
    while stored_replies(cache) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()[1][-2000:]
    children = psutil.Process(process.pid).children(recursive=True)
    assert children  # the engine runs in processes of its own
    process.terminate()
    process.communicate(timeout=120)
    assert process.returncode == 143
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert alive == []

    before = stored_replies(cache)
    assert 3 <= before < RECORDS
    # The same command again, in this process: the session's engine is the one it loads (same model, same
    # settings), so what it asks of the engine is counted here.
    asked = []
    chat = smollm.chat

    def counting(conversations, *args, **options):
        asked.extend(conversations)
        return chat(conversations, *args, **options)

    monkeypatch.setattr(smollm, "chat", counting)
    resumed = CliRunner().invoke(main, args)
    assert resumed.exit_code == 0, resumed.output
    assert len(asked) == RECORDS - before  # only the missing replies were asked for
    assert stored_replies(cache) == RECORDS
    assert f"{before}/{RECORDS}" in resumed.stderr  # the progress bar started from the stored replies
