"""Stopping `lift-local` with SIGTERM mid-phase: the replies already received stay stored, the vLLM engine
processes go away with it, and the same command started again asks only for the rest."""

import subprocess
import time

import psutil
import pytest
from conftest import LIFT_LOCAL, REPO, stored_replies

pytestmark = pytest.mark.vllm


def test_sigterm_keeps_finished_replies_and_leaves_no_engine_behind(tmp_path, real_sample):
    sample = real_sample("dolly_3k.json", list(range(40)))
    cache = tmp_path / "cache"
    command = [*LIFT_LOCAL, "enhance", str(sample), str(tmp_path / "out.jsonl"), "--cache-dir", str(cache),
               "--max-tokens", "256"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    assert 3 <= before < 40
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert stored_replies(cache) == 40
    assert f"{before}/40" in resumed.stderr  # the progress bar started from the stored replies
