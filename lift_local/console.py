"""What the terminal shows: lift-local's own lines and progress bars; the engines' and libraries' logs go
to a log file (or, with -v, stay on the terminal).

Redirecting Python's logging is not enough: vLLM's engine runs in a child process that writes to the file
descriptors it inherits, and libraries (vLLM, transformers, torch) hold on to the sys.stdout/sys.stderr of
when they set up logging. So while a command works, file descriptors 1 and 2 themselves point at the log
file, and lift-local writes its own output to copies of the terminal's descriptors: `stdout()` and
`stderr()`. Streams that are not file descriptors 1 and 2 (click's test runner) are left as they are.
Engines still running when the process ends shut down after the command, logging as they go: that output
goes to the last log file too.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

LOG_NAME = "lift-local.log"

_terminal: dict[int, TextIO] = {}  # fd -> lift-local's own stream for what that fd showed before
_log: Path | None = None
_last_log: Path | None = None  # where the process's last words go (see `_last_words_to_log`)


def stdout() -> TextIO:
    """Where lift-local's own lines go."""
    return _terminal.get(1, sys.stdout)


def stderr() -> TextIO:
    """Where lift-local's progress bars and notes go."""
    return _terminal.get(2, sys.stderr)


def full_log() -> str:
    """For an error message: where the engines' full output is."""
    return f"; full log: {_log}" if _log is not None else "; its log is above"


@contextmanager
def logs_to(path: Path | None, title: str) -> Iterator[None]:
    """While inside, everything but lift-local's own output is appended to the file `path`, under a line
    naming `title` and the time; with None (--verbose) everything stays on the terminal."""
    global _log, _last_log
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    streams = {1: sys.stdout, 2: sys.stderr}
    for stream in streams.values():
        stream.flush()
    with open(path, "ab") as log:
        log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {title}\n".encode())
        log.flush()
        saved = {fd: os.dup(fd) for fd in streams}
        own = {fd: _copy(stream, fd) for fd, stream in streams.items()}
        try:
            for fd in streams:
                os.dup2(log.fileno(), fd)
            _terminal.update(own)
            _log = path
            yield
        finally:
            _terminal.clear()
            _log = None
            for fd, stream in streams.items():
                stream.flush()
                own[fd].flush()
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                if own[fd] is not stream:
                    own[fd].close()
            if _last_log is None:  # registered after the engines' own exit handlers, so it runs before them
                atexit.register(_last_words_to_log)
            _last_log = path


def _last_words_to_log() -> None:
    """At exit, after click or Python printed any error: file descriptors 1 and 2 to the last log file."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        fd = os.open(_last_log, os.O_WRONLY | os.O_APPEND)
    except OSError:  # the folder is gone
        return
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _copy(stream: TextIO, fd: int) -> TextIO:
    """A stream to what `fd` shows now, if `stream` writes there; otherwise `stream` itself."""
    try:
        if stream.fileno() != fd:
            return stream
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return stream
    return open(os.dup(fd), "w", buffering=1, encoding=stream.encoding, errors="backslashreplace")


class Progress(tqdm):
    """A progress bar on lift-local's terminal, with rate and time left. Its clock starts when the first item
    is done: starting an engine or loading a model takes time that is not the rate of the work, and would make
    the first time-left figure wild (hours for a minute's work); until then it shows none."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, disable: bool = False):
        super().__init__(total=total, desc=desc, unit=unit, initial=initial, file=stderr(), dynamic_ncols=True,
                         disable=disable)
        self._timing = False

    def update(self, n: float = 1) -> bool | None:
        if self._timing or self.disable:
            return super().update(n)
        self._timing = True
        self.n += n
        # The clock, the rate's memory and its count of items start here: only what is done from now on is timed.
        self.start_t = self.last_print_t = self._time()
        self.initial = self.last_print_n = self.n
        self.refresh()
        return True
