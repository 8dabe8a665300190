"""The run folder's `manifest.json`: what produced each phase's output, read and written in this one place,
and `RunFolder`, the manifest with the record files it names.

The pipeline writes it after every phase (so an interrupted run knows what is finished) and the report
reads it; both see the same typed entries.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError
from .records import Record, atomic_path, read_records

MANIFEST = "manifest.json"
T = TypeVar("T")


@dataclasses.dataclass
class PhaseEntry:
    """One phase of a run: 'done' with its files and figures, or 'skipped'."""

    status: str
    output: str | None = None  # the records the next phase reads, a file name in the run folder
    output_sha256: str | None = None
    side: dict[str, str] = dataclasses.field(default_factory=dict)  # side file name -> file ("dropped": ...)
    records_in: int | None = None
    records_out: int | None = None
    seconds: float | None = None
    finished: str | None = None  # ISO 8601, UTC
    fingerprint: str | None = None  # of everything that decided the output (see pipeline.py)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value not in (None, {})}

    def params_as(self, cls: type[T]) -> T:
        """The parameters the phase ran with, as its parameter dataclass `cls` (JSON lists become tuples)."""
        fields = {field.name for field in dataclasses.fields(cls) if field.init}
        return cls(**{key: tuple(value) if isinstance(value, list) else value
                      for key, value in self.params.items() if key in fields})


@dataclasses.dataclass
class Manifest:
    input: dict[str, Any] = dataclasses.field(default_factory=dict)  # path, sha256, records, limit, seed
    models: dict[str, str] = dataclasses.field(default_factory=dict)  # role -> model
    phases: dict[str, PhaseEntry] = dataclasses.field(default_factory=dict)  # in run order
    lift_local_version: str | None = None
    curated: str | None = None  # the curated records, once the run finished
    exports: dict[str, str] = dataclasses.field(default_factory=dict)  # format -> file
    license: str | None = None  # of the curated data, for its dataset card: a Hugging Face Hub licence id
    model_sha256: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # role -> its models' weights' digests
    ab: dict[str, Any] = dataclasses.field(default_factory=dict)  # `lift-local ab`'s results on this run's arms

    @classmethod
    def load(cls, run_dir: Path, *, missing_ok: bool = False) -> Manifest:
        path = run_dir / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if missing_ok:
                return cls()
            raise InputError(path, None, "no such file; is this a folder written by `lift-local run`?") from None
        except json.JSONDecodeError as err:
            raise InputError(path, f"line {err.lineno} column {err.colno}", f"malformed JSON: {err.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("phases"), dict):
            raise InputError(path, None, "not a lift-local manifest: no 'phases' object")
        try:
            phases = {name: PhaseEntry(**entry) for name, entry in data.pop("phases").items()}
            return cls(**data, phases=phases)
        except TypeError as err:
            raise InputError(path, None, f"not a manifest of this lift-local version ({err}); use a new --out folder") from None

    def save(self, run_dir: Path) -> None:
        data = {**dataclasses.asdict(self), "phases": {name: e.to_json() for name, e in self.phases.items()}}
        with atomic_path(run_dir / MANIFEST) as tmp:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class RunFolder:
    """The manifest of a run folder and the record files it names, read on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = Manifest.load(path)
        self.phases = self.manifest.phases
        self._read: dict[Path, list[Record]] = {}

    @property
    def title(self) -> str:
        return f"lift-local report: {self.path.resolve().name}"

    def done(self, phase: str) -> PhaseEntry | None:
        entry = self.phases.get(phase)
        return entry if entry and entry.done else None

    def status(self, phase: str) -> str:
        entry = self.phases.get(phase)
        return entry.status if entry else "not run"

    def records(self, phase: str, side: str | None = None) -> list[Record]:
        """The records of a finished phase's output, or of its side file `side`; an empty file holds none."""
        entry = self.phases[phase]
        name = entry.output if side is None else entry.side.get(side)
        if not isinstance(name, str):
            raise InputError(self.path / MANIFEST, f"phases.{phase}", f"names no '{side or 'output'}' file")
        path = self.path / name
        if path not in self._read:
            empty = path.is_file() and path.stat().st_size == 0
            self._read[path] = [] if empty else read_records(path)
        return self._read[path]
