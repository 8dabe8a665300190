"""The terminal shows lift-local's own output while other output goes to the log file; one run per run
folder; what lift-local starts ends with it. Without an engine: `test_lifeline_vllm.py` uses the real one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from click.testing import CliRunner
from conftest import REPO

from lift_local import runlock
from lift_local.cli import main
from lift_local.errors import RunFolderInUse


def python(code: str, **options) -> subprocess.Popen:
    """This checkout's Python running `code`, its standard output and error piped."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **options)


def test_own_lines_reach_the_terminal_and_everything_else_the_log(tmp_path):
    log = tmp_path / "lift-local.log"
    process = python(f"""
        import logging, subprocess, sys
        from pathlib import Path
        from lift_local import console
        with console.logs_to(Path({str(log)!r}), "lift-local test"):
            print("own line", file=console.stdout())
            print("own bar", file=console.stderr())
            logging.basicConfig(stream=sys.stderr)
            logging.getLogger("vllm").warning("INFO library line")
            print("library print")
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'INFO engine line\\\\n')"])
        print("after")
        """)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.split() == ["own", "line", "after"]
    assert err.split() == ["own", "bar"]
    written = log.read_text()
    assert "lift-local test" in written
    assert all(line in written for line in ("INFO library line", "library print", "INFO engine line"))


def test_verbose_leaves_everything_on_the_terminal(tmp_path):
    process = python("""
        import subprocess, sys
        from lift_local import console
        with console.logs_to(None, "lift-local test"):
            print("own line", file=console.stdout())
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'INFO engine line\\\\n')"])
        """)
    out, err = process.communicate(timeout=60)
    assert (out, err) == ("own line\n", "INFO engine line\n")


HOLD = """
    import sys, time
    from pathlib import Path
    from lift_local import runlock
    with runlock.hold(Path({folder!r}), "lift-local run data.json --out {folder}"):
        print("held", flush=True)
        time.sleep(600)
    """


def test_a_second_run_on_the_same_folder_stops_at_once_naming_the_first(tmp_path, real_sample):
    out = tmp_path / "run"
    holder = python(HOLD.format(folder=str(out)))
    try:
        assert holder.stdout.readline() == "held\n"
        result = CliRunner().invoke(main, ["run", str(real_sample("dolly_3k.json", [0, 1])), "--out", str(out)])
        assert result.exit_code == 1
        assert f"{out} is in use by another lift-local run: pid {holder.pid} on " in result.output
        assert f"lift-local run data.json --out {out}" in result.output
        assert not (out / "manifest.json").exists() and not (out / "lift-local.log").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_lock_does_not_block_the_next(tmp_path):
    holder = python(HOLD.format(folder=str(tmp_path)))
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(RunFolderInUse):
        with runlock.hold(tmp_path, "second"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with runlock.hold(tmp_path, "third"):
        assert "third" in (tmp_path / runlock.LOCK_NAME).read_text()
    with runlock.hold(tmp_path, "fourth"):  # released on leaving, too
        pass


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    read, write = os.pipe()
    with runlock.hold(tmp_path, "first"):
        child = os.fork()
        if child == 0:  # as vLLM forks its engine on CPU: no exec, which would close the lock anyway
            os.write(write, b"up\n")
            time.sleep(600)
            os._exit(0)
        os.close(write)
        with open(read) as started:
            assert started.readline() == "up\n"
    try:
        with runlock.hold(tmp_path, "second"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@pytest.mark.slow  # child processes that run out their time
def test_descendants_end_when_their_parent_is_killed():
    """A stand-in for the engine: a grandchild of the killed process, started after the watchdog."""
    parent = python("""
        import subprocess, sys, time
        from lift_local import lifeline
        lifeline.guard()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        time.sleep(3)  # the watchdog looks every second
        print(child.pid, flush=True)
        time.sleep(600)
        """)
    engine = psutil.Process(int(parent.stdout.readline()))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    engine.wait(timeout=60)  # psutil.TimeoutExpired if it lives on
    assert not engine.is_running()
