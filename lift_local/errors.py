"""lift-local's own errors. Each is one line for the user; the CLI alone turns them into a message and a
non-zero exit (no module below the CLI knows Click), so the library raises the same errors when it is
used from Python.
"""

from __future__ import annotations

import errno
from pathlib import Path


class LiftError(Exception):
    """Anything lift-local reports to the user as one line, without a traceback."""


class InputError(LiftError):
    """A problem with the user's data or files, naming the file and, where known, the record or line."""

    def __init__(self, path: Path | str, where: str | None, problem: str):
        location = f"{path}:{where}" if where else str(path)
        super().__init__(f"{location}: {problem}")


class StorageError(LiftError):
    """A file or folder the operating system would not let lift-local read or write: a full disk, a read-only
    folder, a file removed while a run read it. Everything finished before is kept (writes are atomic, the
    caches commit as they go), so the same command resumes once the cause is mended."""

    _HINTS = {
        errno.ENOSPC: "free some space and run the same command again: what is finished is kept",
        errno.EDQUOT: "free some space and run the same command again: what is finished is kept",
        errno.EROFS: "the file system is read-only: write somewhere else",
        errno.EACCES: "no permission: write somewhere else, or change the folder's permissions",
        errno.ENOENT: "it was removed or moved while lift-local used it",
    }

    def __init__(self, path: Path | str, cause: OSError | str):
        if isinstance(cause, OSError):
            hint = self._HINTS.get(cause.errno)
            cause = (cause.strerror or str(cause)) + (f" ({hint})" if hint else "")
        super().__init__(f"{path}: {cause}")


class ConfigError(LiftError):
    """A run configuration (TOML file, --set override, parameter value) that cannot be used."""


class ModelError(LiftError):
    """A model that is unknown, misconfigured or missing."""


class ClusterError(LiftError):
    """A Ray cluster that cannot be reached, or work on it that failed or did not come back."""


class NothingToCompare(LiftError):
    """Two score files that share no scored record."""


class NothingSelected(LiftError):
    """A phase that could not keep any record, e.g. a judge that gave no valid reply at all."""


class RunFolderInUse(LiftError):
    """A run folder that another `lift-local run` is working in."""


class BackendError(LiftError):
    """A model backend that failed while answering: a vLLM engine that died, a server that stopped. The
    reply cache adds how many replies are stored and how to resume."""


class EngineError(BackendError):
    """The vLLM engine in this process failed to start or died; the message says where its log is."""


class ServerError(BackendError):
    """An OpenAI-compatible server that cannot be reached, or answered with an error."""


class ParameterError(ConfigError, ValueError):
    """A parameter value outside what its declaration allows. `name` is the field; the config and the command
    line say where the value came from."""

    def __init__(self, owner: str, name: str, problem: str):
        self.owner, self.name, self.problem = owner, name, problem
        super().__init__(f"{owner}.{name} {problem}")
