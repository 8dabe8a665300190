"""The `Executor` of `lift-local run --ray`: each phase's `map` on a Ray cluster, its `select` on the driver.

A `map` call becomes a Ray Dataset of the batch's records, mapped by a Ray Data actor pool (`map_batches`
with a class). Each actor is a *replica*: a Workbench of its own, so one vLLM engine (or the embedder)
behind the reply cache, and the phase's own `map` applied to each block it is given. Prompts, parsing,
judge retries, `prompt_too_long` handling and the cache are therefore the in-process path's, unchanged.
`ray.data.llm` was not used: it asks the engine for rows of prompts, which would split every phase's map
into prompt building, generation and parsing, and puts neither the reply cache nor the judge's re-asking
in between (docs/ray.md says more).

Records stay off the driver: a replica writes the records its map returns to a staging file in the run
folder's cache (shared storage on a cluster, like the caches) and sends the driver only where each one is
(`StagedRecord`) with its features. `select` decides on the features; the records a phase keeps travel on as
the same small handles, to the next map (whose replicas read them) or to the pipeline's writer, which reads
them one at a time. The input is staged the same way as the driver reads it (`hold`), a block at a time;
so the driver never holds every record's text at once, except the curated records for the exports.

Replicas store replies in shards of the run folder's caches (store.py); the driver folds them in before
and after every map, so a run killed mid-phase resumes from every reply already stored, with Ray or without.
A replica whose process dies is restarted and its block asked again (Ray's actor restarts and task
retries, bounded); an error in a replica, or the retries exhausted, stops the run with a `ClusterError`;
every record sent must come back once, or the run stops too.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import pickle
import shutil
import signal
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from . import cpu_engine
from .config import ClusterConfig
from .errors import ClusterError
from .llm.inprocess import close_engines
from .phases import Mapped, MapStep
from .records import Record
from .workbench import Workbench

# A replica that dies is restarted and its block retried this many times; then the run stops. (Ray Data's
# default is forever: a block that kills its worker every time, say out of memory, would hang the run.)
_RESTARTS = 3
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # replicas never reach a model hub either


STAGED = "staged"  # the folder of the run's cache that holds the replicas' staging files


@dataclasses.dataclass(frozen=True)
class StagedRecord:
    """A record in a replica's staging file (its bytes at `offset`), with the metadata that `select` has
    given it since; what the driver holds instead of the record. `to_json` reads it, for the writer."""

    path: str
    offset: int
    size: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def with_meta(self, **meta: Any) -> StagedRecord:
        return dataclasses.replace(self, meta={**self.meta, **meta})

    def load(self) -> Record:
        file = _STAGING_FILES.open(self.path)
        file.seek(self.offset)
        record = pickle.loads(file.read(self.size))
        return record.with_meta(**self.meta) if self.meta else record

    def to_json(self) -> dict[str, Any]:
        return self.load().to_json()


class _OpenFiles:
    """Staging files kept open while their records are read, the most recent few: a writer reads a file's
    records in order, so a million records open a few hundred files, not a million."""

    def __init__(self, most: int = 16):
        self.most = most
        self.files: dict[str, Any] = {}

    def open(self, path: str) -> Any:
        if path not in self.files:
            if len(self.files) >= self.most:
                self.files.pop(next(iter(self.files))).close()  # the least recently opened
            self.files[path] = open(path, "rb")  # noqa: SIM115 (closed on eviction or by close_all)
        return self.files[path]

    def close_all(self) -> None:
        for file in self.files.values():
            file.close()
        self.files.clear()


_STAGING_FILES = _OpenFiles()


def stage(records: list[Record], folder: Path) -> list[StagedRecord]:
    """`records` in a new staging file of `folder`; complete once it has its name (a replica that dies
    while writing leaves only a temporary file, and its block is mapped again)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.pickles"
    staged, offset = [], 0
    with open(path.with_suffix(".tmp"), "wb") as file:
        for record in records:
            blob = pickle.dumps(record)
            file.write(blob)
            staged.append(StagedRecord(str(path), offset, len(blob)))
            offset += len(blob)
    path.with_suffix(".tmp").rename(path)
    return staged


class Replica:
    """One actor of the pool: a Workbench on its machine, and the phase's map step."""

    def __init__(self, step: MapStep, bench: dict[str, Any]):
        self.step = step
        self.bench = Workbench(**bench, sharded=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        records = [_record(pickle.loads(blob)) for blob in batch["record"]]
        mapped = self.step(records, self.bench)
        staged = stage([m.record for m in mapped], self.bench.cache_dir / STAGED)
        return {"index": batch["index"],
                "mapped": [pickle.dumps(Mapped(handle, m.features)) for handle, m in zip(staged, mapped, strict=True)]}

    def __del__(self) -> None:
        # Ray Data lets a finished pool's actors exit: shut the engine down rather than orphan its process.
        close_engines()
        self.bench.close()


class RayExecutor:
    """Runs `map` on the Ray cluster at `config.ray`, connecting on the first call; a context manager that
    disconnects at its end. `bench` is the driver's Workbench: replicas build theirs from it."""

    def __init__(self, config: ClusterConfig, bench: Workbench, echo: Callable[[str], None] = print):
        self.config = config
        self.bench = bench
        self.echo = echo
        self._connected = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._connected:
            ray.shutdown()
            self._connected = False
        # What the records a run passed on were; its outputs are written by now (or it failed, and the
        # next run maps again, from its stored replies).
        _STAGING_FILES.close_all()
        shutil.rmtree(self.bench.cache_dir / STAGED, ignore_errors=True)

    def hold(self, records: Iterable[Record]) -> list[StagedRecord]:
        """Records read on the driver, staged a block at a time: it never holds them all."""
        held, records = [], iter(records)
        while block := list(itertools.islice(records, self.config.batch_size)):
            held += stage(block, self.bench.cache_dir / STAGED)
        return held

    def map(self, step: MapStep, records: list[Record]) -> list[Mapped]:
        if not records:
            return []
        self.connect()
        self.bench.absorb_shards()  # what replicas of an interrupted run stored, before asking again
        mapped = self._map(step, records)
        # Only now: after a failure, replicas may still be writing their shards; the next run folds them in.
        self.bench.absorb_shards()
        return mapped

    def _map(self, step: MapStep, records: list[Record]) -> list[Mapped]:
        config = self.config
        # Blocks of at most batch_size records, at least one per replica.
        size = min(config.batch_size, math.ceil(len(records) / config.replicas))
        rows = [{"index": i, "record": pickle.dumps(record)} for i, record in enumerate(records)]
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / size))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates actor options given this way, and has no other way for these two.
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
            dataset = dataset.map_batches(
                Replica, fn_constructor_kwargs={"step": step, "bench": self.bench.portable()}, batch_size=size,
                compute=ray.data.ActorPoolStrategy(size=config.replicas), num_cpus=config.cpus_per_replica,
                num_gpus=config.gpus_per_replica, max_restarts=_RESTARTS, max_task_retries=_RESTARTS,
            )
        mapped: list[Mapped | None] = [None] * len(records)
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for index, blob in zip(batch["index"], batch["mapped"], strict=True):
                    if mapped[index] is not None:
                        raise ClusterError(f"record {index} came back from the cluster twice")
                    mapped[index] = pickle.loads(blob)
        except ray.exceptions.RayError as err:
            raise ClusterError(f"a Ray worker failed: {_root_cause(err)}") from err
        lost = [i for i, m in enumerate(mapped) if m is None]
        if lost:
            raise ClusterError(f"{len(lost)} of {len(records)} records did not come back from the cluster")
        return mapped  # type: ignore[return-value]

    def connect(self) -> None:
        """Connect now (else on the first `map`)."""
        if self._connected:
            return
        options: dict[str, Any] = {"include_dashboard": False} if self.config.ray == "local" else {}
        # Ray's C++ core on the driver logs an error-looking line for every actor pool Ray Data makes with
        # restarts ("constructor arguments in the object store"); a failure that matters raises anyway.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        on_sigterm = signal.getsignal(signal.SIGTERM)  # ray.init sets its own; lift-local's unwinds the same way
        # Replicas start with tcmalloc and Intel OpenMP loaded, as `lift-local` does, so that on a CPU their
        # engines run in their own process (cpu_engine); a node that has them elsewhere warns that it cannot.
        libraries = cpu_engine.preload_libraries()
        preload = {"LD_PRELOAD": " ".join(libraries)} if libraries else {}
        settings = dict(log_to_driver=False, logging_level=logging.WARNING,
                        runtime_env={"env_vars": {**_OFFLINE, **preload}})
        try:
            ray.init(address=self.config.ray, **settings, **options)
            joined = "joined the new cluster on this machine" if self.config.ray == "local" else \
                f"joined the cluster at {self.config.ray}"
        except ConnectionError as err:
            if self.config.ray != "auto":
                raise self._unreachable(err) from None
            # As ray.init() does alone: no cluster runs where this machine would join one, so start one here.
            ray.init(**settings, include_dashboard=False)
            joined = "no Ray cluster was running: started one on this machine"
        except (RuntimeError, ValueError) as err:
            raise self._unreachable(err) from None
        resources = ray.cluster_resources()
        self.echo(f"Ray: {joined} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)")
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
        for handler in logging.getLogger("ray.data").handlers:  # its file in the session's logs keeps everything
            if type(handler).__name__ != "SessionFileHandler":
                handler.setLevel(logging.WARNING)
        self._connected = True


    def _unreachable(self, error: Exception) -> ClusterError:
        # A token that is not the cluster's looks like an unreachable cluster (Ray logs the cause).
        return ClusterError(f"cannot reach the Ray cluster at {self.config.ray!r}: {error}. Is it running, and does "
                            "this command have its token (RAY_AUTH_TOKEN, or ~/.ray/auth_token; docs/ray.md)?")


def _record(item: Record | StagedRecord) -> Record:
    return item.load() if isinstance(item, StagedRecord) else item


def _root_cause(error: BaseException) -> str:
    """What went wrong in a replica, as one line. Ray Data keeps a replica's exception as text only: the
    traceback of the first error, then of those raised from it."""
    first = str(error).split("\n\nThe above exception was the direct cause")[0]
    lines = [line.strip() for line in first.splitlines() if line.strip()] or [type(error).__name__]
    kind, _, message = lines[-1].partition(": ")
    return message if kind.startswith("lift_local.errors.") else lines[-1]
