"""`kill -9` of a running `lift-local run` (as a scheduler or the out-of-memory killer does): its vLLM engine
ends with it, its lock does not block the next run, and that run resumes to the end with a quiet terminal:
lift-local's own lines and bars, no engine log line, which all went to the run folder's log file."""

import re
import signal
import subprocess
import time

import psutil
import pytest
from conftest import LIFT_LOCAL, REPO, SMOLLM, engine_processes, stored_replies

from lift_local import runlock

pytestmark = pytest.mark.vllm
ENGINE_LOG_LINE = re.compile(r"\b(INFO|DEBUG)\b")  # vLLM's: "(EngineCore pid=…) INFO 11-25 16:56:53 [file.py:…]"


def test_kill_9_ends_the_engine_and_the_run_resumes_quietly(tmp_path, real_sample):
    out = tmp_path / "run"
    command = [
        *LIFT_LOCAL, "run", str(real_sample("dolly_3k.json", list(range(6)))), "--out", str(out),
        "--set", f"models.rewriter='{SMOLLM}'", "--set", f"models.judge='{SMOLLM}'",
        "--set", "expand.rounds=1", "--set", "enhance.max_tokens=48", "--set", "expand.max_tokens=48",
        "--set", "variety.keep=0.5", "--set", "quality.top=2", "--set", "quality.retries=0",
        "--set", "dedup.semantic=0",  # the embedder in dedup is not what this test is about
    ]  # fmt: skip
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=engine_processes())
    deadline = time.monotonic() + 600
    while stored_replies(out / "cache") < 1 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.poll() is None, run.communicate()[1][-2000:]
    started = psutil.Process(run.pid).children(recursive=True)  # the engine's processes and the watchdog
    assert any("VLLM::EngineCore" in " ".join(p.cmdline()) for p in started)

    run.send_signal(signal.SIGKILL)
    console = run.communicate(timeout=60)
    _, alive = psutil.wait_procs(started, timeout=120)
    assert alive == []
    assert not ENGINE_LOG_LINE.search("".join(console))
    with runlock.hold(out, "the test"):  # the kernel released the killed run's lock
        pass

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not ENGINE_LOG_LINE.search(resumed.stdout + resumed.stderr)
    assert re.search(r"^\[6/6\] quality: \d+ → 2 records in ", resumed.stdout, re.MULTILINE)
    assert "estimate: the rest of the run takes " in resumed.stdout
    assert "reply/s" in resumed.stderr or "s/reply" in resumed.stderr  # the progress bars, with their rate
    assert f"Log:          {out / 'lift-local.log'}" in resumed.stdout
    log = (out / "lift-local.log").read_text()
    assert log.count(f"lift-local run {command[4]} --out {out}") == 2  # a heading for each run
    killed, resumed_log = log.split(f"lift-local run {command[4]} --out {out}")[1:]
    assert re.search(r"\(EngineCore pid=\d+\) INFO .*init engine", killed)  # as asked: processes of its own
    # By default, on a CPU, the engine runs in lift-local's own process.
    assert re.search(r"\(MainProcess pid=\d+\) INFO .*init engine", resumed_log)
    assert "EngineCore" not in resumed_log
