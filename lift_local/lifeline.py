"""The processes lift-local starts end when it ends, however it ends.

`kill -9` of lift-local (a batch scheduler, the out-of-memory killer) gives it no chance to shut its vLLM
engine down: the EngineCore process would live on, re-parented and busy, holding a GPU's memory. So before
an engine starts, `guard()` starts a watchdog (this file run as a script) whose standard input is a pipe
that only lift-local holds open. Every second the watchdog notes lift-local's descendants; when the pipe
reaches end-of-file, lift-local has ended, and the watchdog terminates (then kills) those still running,
and every process that carries lift-local's mark in its environment (`MARK`, which every process started
after `guard()` inherits): that catches one started in the last second, before a look could note it, and
already re-parented when lift-local died. After a clean exit there are none left.

vLLM forks its engine on CPU, and a forked child keeps every file descriptor, even close-on-exec ones: a
child holding the pipe would keep the watchdog waiting, and one holding the run lock would keep the run
folder locked. `private_fd` closes such descriptors in every forked child.

This file runs as a script with `python -I`, so it imports nothing of lift-local's.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

POLL_SECONDS = 1.0  # how often the watchdog looks for new descendants
MARK = "LIFT_LOCAL_LIFELINE"  # in the environment of what lift-local starts: the pid of the lift-local it belongs to
GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL: vLLM's engine frees its memory on SIGTERM

_private: set[int] = set()
_watchdog: subprocess.Popen | None = None


def private_fd(fd: int) -> int:
    """Closes `fd` in every child this process forks from now on; returns it."""
    _private.add(fd)
    return fd


def close_private(fd: int) -> None:
    _private.discard(fd)
    os.close(fd)


def _close_in_child() -> None:
    for fd in _private:
        try:
            os.close(fd)
        except OSError:
            pass
    _private.clear()


os.register_at_fork(after_in_child=_close_in_child)


def guard() -> None:
    """Makes this process's descendants end when it ends, even by SIGKILL (starts the watchdog once)."""
    global _watchdog
    if _watchdog is not None and _watchdog.poll() is None:
        return
    read, write = os.pipe()
    _watchdog = subprocess.Popen([sys.executable, "-I", __file__, str(os.getpid())], stdin=read,
                                 stdout=subprocess.DEVNULL)
    os.close(read)
    private_fd(write)  # never closed here: the kernel closes it when this process ends
    os.environ[MARK] = str(os.getpid())


def _watch(parent_pid: int) -> None:
    """The watchdog: note the parent's descendants until stdin ends, then end those still running."""
    import psutil

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C or a hang-up is the parent's to handle
        signal.signal(sig, signal.SIG_IGN)
    me = os.getpid()
    known: set[psutil.Process] = set()
    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        return
    while not select.select([sys.stdin], [], [], POLL_SECONDS)[0]:  # the parent never writes: readable = EOF
        try:
            children = parent.children(recursive=True)
        except psutil.Error:
            children = []
        # Kept, not replaced: once the parent is gone its children no longer show as its descendants.
        known = {p for p in known if p.is_running()} | {p for p in children if p.pid != me}
    left = [p for p in known if p.is_running()] + [p for p in _marked(str(parent_pid)) if p.pid != me and p not in known]
    for process in list(left):  # and whatever they started since the last look
        try:
            left += [p for p in process.children(recursive=True) if p not in left]
        except psutil.Error:
            pass
    for process in left:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=GRACE_SECONDS)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


def _marked(owner: str) -> list:
    """The processes whose environment names `owner` as the lift-local they belong to."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == owner:
                found.append(process)
        except psutil.Error:
            pass
    return found


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
