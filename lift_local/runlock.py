"""One `lift-local run` per run folder at a time.

Two runs on one folder would each start engines and overwrite each other's files. The lock is an
`flock` on OUT/lift-local.lock, which the kernel releases however its holder ends (kill -9 included), so a
killed run never blocks the next one. While held, the file names the holder for the other run's error.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .errors import RunFolderInUse
from .lifeline import close_private, private_fd

LOCK_NAME = "lift-local.lock"


@contextmanager
def hold(folder: Path, command: str) -> Iterator[None]:
    """Holds `folder`'s lock while inside; RunFolderInUse, naming the holder, if another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = private_fd(os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "it has not said who it is yet"
            raise RunFolderInUse(f"{folder} is in use by another lift-local run: {holder}. Wait for it to end, "
                                 "or give this run another --out") from None
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # still held: no one reads a finished run as the holder
    finally:
        close_private(fd)
