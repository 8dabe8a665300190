"""Runs a generated program with its tests in a child process, never in lift-local's: a model's code may loop,
eat memory, delete files or reach the network.

Three layers, each enough against an honest mistake and together a fair barrier against a careless program
(not a security boundary against a hostile one: use a container or a VM for that):
- Resource limits set in the child before the program runs: address space (`memory`), CPU seconds, the
  size of files it writes, no core dumps; a wall-clock `timeout` kills its whole process group.
- An audit hook (PEP 578, which the program cannot remove) refuses sockets, new processes, signals,
  ctypes' look-ups of C functions and changes to files outside its own empty working folder: the calls
  OpenAI's human-eval `reliability_guard` disables, refused at the interpreter's audit events instead of
  by patching modules (which a program can undo).
- Where unprivileged user namespaces exist (`unshare -rn` succeeds), a network namespace of its own whose
  only interface, loopback, is down: no network whatever the program does.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]
_TAIL = 2000  # characters of the program's stderr kept in an outcome
_MAX_FILE = 16 << 20  # bytes a program may write to one file (its stderr included)

# Runs in the child: limits, the audit hook, then the program from stdin. Python exits 1 on an uncaught
# exception, so a failed assert is exit 1 with "AssertionError" last in stderr.
_RUNNER = r"""
import os, resource, sys
memory, seconds, max_file = map(int, sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (max_file, max_file))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
home = os.path.realpath(os.getcwd())
source = sys.stdin.read()
refused = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "os.chdir", "os.chroot", "os.chmod", "os.chown", "os.chflags",
           "os.link", "os.symlink", "os.truncate", "pty.", "ctypes.dlsym", "shutil.", "webbrowser.")
writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def outside(path):
    return not os.path.realpath(os.path.join(home, os.fsdecode(path))).startswith(home + os.sep)
def guard(event, args):
    if event.startswith(refused):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event in ("os.remove", "os.rmdir", "os.mkdir", "os.rename"):
        paths = args[:2] if event == "os.rename" else args[:1]
        if any(outside(path) for path in paths if not isinstance(path, int)):
            raise PermissionError(f"sandbox: {event} outside the working folder is not allowed")
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and outside(args[0]):
        mode, flags = args[1], args[2]
        if (flags & writes) if mode is None else any(c in mode for c in "wax+"):
            raise PermissionError("sandbox: writing outside the working folder is not allowed")
sys.addaudithook(guard)
exec(compile(source, "<program>", "exec"), {"__name__": "__main__"})
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """`passed`: ran to the end; `failed`: a test failed or the program raised (a wrong program);
    `timeout`: stopped at the time or CPU limit; `error`: stopped by the sandbox (memory, a refused call,
    a signal). `detail` is the end of its stderr or why it was stopped."""

    status: Status
    detail: str = ""


def run(program: str, *, timeout: float = 10.0, memory: int = 1 << 30) -> Outcome:
    """Run `program` (a solution followed by its tests) to the end, within `timeout` seconds of wall time
    and CPU and `memory` bytes of address space."""
    with tempfile.TemporaryDirectory(prefix="lift-sandbox-") as folder:
        limits = [str(memory), str(int(timeout) + 1), str(_MAX_FILE)]
        command = [*_isolation(), sys.executable, "-I", "-B", "-c", _RUNNER, *limits]
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": folder, "TMPDIR": folder}
        with open(Path(folder) / ".stderr", "w+b") as stderr:
            child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                     cwd=folder, env=env, start_new_session=True)
            try:
                child.communicate(program.encode("utf-8"), timeout=timeout)
            except subprocess.TimeoutExpired:
                return Outcome("timeout", f"stopped after {timeout:g} s")
            finally:
                _kill_group(child)
            stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, stderr.tell() - _TAIL))
            tail = stderr.read().decode("utf-8", "replace").strip()
    return _outcome(child.returncode, tail)


def _outcome(code: int, tail: str) -> Outcome:
    last = tail.splitlines()[-1] if tail else ""
    if code == 0:
        return Outcome("passed")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return Outcome("timeout", "stopped at the CPU time limit")
    if code < 0:
        return Outcome("error", f"killed by {signal.Signals(-code).name}")
    if last.startswith("MemoryError"):
        return Outcome("error", "stopped at the memory limit")
    if "sandbox: " in last:  # a refused call, maybe caught and raised again as another error
        return Outcome("error", last[last.index("sandbox: "):].rstrip(">"))
    return Outcome("failed", tail)


def _kill_group(child: subprocess.Popen) -> None:
    """The program and anything it started (it cannot fork, but a namespace's helper may run)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


@functools.cache
def _isolation() -> tuple[str, ...]:
    """`unshare -rn` (a user and a network namespace: no interface is up) where this system allows it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        works = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        works = False
    return (unshare, "-rn") if works else ()


def network_isolated() -> bool:
    """Whether programs run in a network namespace of their own (else only the audit hook refuses sockets)."""
    return bool(_isolation())
