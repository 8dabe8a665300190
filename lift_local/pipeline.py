"""`lift-local run`: every phase in order, in one resumable run folder.

Each phase's output is a file in the run folder, and the manifest records a fingerprint of what produced it
(its parameters, models, prompts and the exact records it read). Started again, a phase whose fingerprint is
unchanged is skipped; a changed one re-runs, and so do the phases after it whose input changed. Inside a
phase, the reply and embedding caches in `cache/` make an interrupted phase redo only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import card, exports, models
from .config import ClusterConfig, RunConfig
from .errors import ConfigError
from .manifest import Manifest, PhaseEntry
from .phases import Executor, Local, Outcome, Phase
from .records import Record, iter_records, read_records, write_records
from .workbench import Workbench

CURATED = "curated.jsonl"


def run(
    input_path: Path,
    out_dir: Path,
    config: RunConfig,
    bench: Workbench,
    *,
    limit: int | None = None,
    seed: int = 0,
    formats: tuple[str, ...] = (),
    fields: dict[str, str] | None = None,
    echo: Callable[[str], None] = print,
) -> Manifest:
    """Run (or resume) every phase into `out_dir`; returns the manifest.

    `fields` maps lift-local's field names to the input's columns (`read_records`). With `config.cluster.ray`,
    the phases' per-record work runs on that Ray cluster; everything else, and every file, is the same.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with executor_for(config.cluster, bench, echo) as executor:
        records = sample(executor.hold(iter_records(input_path, fields)), limit, seed)
        manifest = Manifest.load(out_dir, missing_ok=True)
        old_phases, manifest.phases = manifest.phases, {}
        manifest.lift_local_version = version("lift-local")
        manifest.input = {"path": str(Path(input_path).resolve()), "sha256": sha256_file(input_path),
                          "records": len(records), "limit": limit, "seed": seed,
                          # A changed mapping re-runs every phase; without one, earlier runs' fingerprints stand.
                          **({"fields": fields} if fields else {})}
        active = [phase for phase in config.phases if phase.name not in config.skip]
        manifest.models = bench.identities(role for phase in active for role in phase.roles)
        # Resolved up front, so that a bad template or model name fails now rather than hours into the run.
        decided_by = {phase.name: bench.fingerprint_inputs(phase) for phase in active}
        for phase in active:
            phase.check(bench)
        upstream = _digest(manifest.input)
        current: list[Record] | None = records
        estimated = False  # once, after the first phase that asked a model for replies
        for number, phase in enumerate(config.phases, start=1):
            label = f"[{number}/{len(config.phases)}] {phase.name}"
            if phase not in active:
                manifest.phases[phase.name] = PhaseEntry("skipped")
                echo(f"{label}: skipped")
                continue
            params = dataclasses.asdict(phase.params)
            fingerprint = _digest({"phase": phase.name, "params": params, "upstream": upstream, **decided_by[phase.name]})
            entry = old_phases.get(phase.name)
            if entry is not None and entry.fingerprint == fingerprint and _outputs_intact(out_dir, entry):
                manifest.phases[phase.name] = entry
                current = None  # read lazily, only if a later phase has to run
                echo(f"{label}: unchanged since {entry.finished}, kept {entry.records_out} records")
            else:
                if current is None:
                    current = executor.hold(iter_records(out_dir / _last_output(manifest)))
                echo(f"{label}: started on {len(current)} records")
                started, asked = time.perf_counter(), bench.replies_asked()
                outcome = phase.run(current, executor)
                entry = _write_phase(out_dir, number, phase, outcome)
                entry.fingerprint, entry.params, entry.records_in = fingerprint, params, len(current)
                entry.seconds = round(time.perf_counter() - started, 1)
                manifest.phases[phase.name] = entry
                manifest.save(out_dir)
                current = outcome.records
                echo(f"{label}: {entry.records_in} → {entry.records_out} records in {entry.seconds} s")
                for line in phase.summary(outcome):
                    echo(f"    {line}")
                asked = bench.replies_asked() - asked
                if not estimated and asked:
                    estimated = True
                    later = active[active.index(phase) + 1:]
                    estimate = _estimate(later, len(current), entry.seconds / asked, phase.name)
                    if estimate:
                        echo(estimate)
            upstream = entry.output_sha256
        # Inside the block: on a cluster, `current` may be records that the executor keeps until it ends.
        write_records(out_dir / CURATED, iter_records(out_dir / _last_output(manifest)) if current is None else current)
    manifest.curated = CURATED
    curated = read_records(out_dir / CURATED) if formats else []
    manifest.exports = {fmt: exports.write(out_dir, curated, fmt) for fmt in formats}
    manifest.license = config.license
    manifest.model_sha256 = _weights_sha256(bench, [role for phase in active for role in phase.roles])
    if manifest.ab and manifest.ab["arms"].get("curated", {}).get("sha256") != sha256_file(out_dir / CURATED):
        manifest.ab = {}  # `lift-local ab` compared another curated set
    manifest.save(out_dir)
    card.write_card(out_dir)
    return manifest


def executor_for(cluster: ClusterConfig, bench: Workbench,
                 echo: Callable[[str], None] = print) -> contextlib.AbstractContextManager[Executor]:
    """Where the phases' `map` runs: this process, or the Ray cluster `cluster.ray` names."""
    if cluster.ray is None:
        return contextlib.nullcontext(Local(bench))
    from .ray_executor import RayExecutor  # Ray is an optional extra, imported only when asked for

    return RayExecutor(cluster, bench, echo)


def sample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded sample of `limit` records, in their original order."""
    if limit is None or limit >= len(records):
        return records
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in chosen]


def _weights_sha256(bench: Workbench, roles: list[str]) -> dict[str, list[str]]:
    """The digests of each role's models' weights (several for a jury), for the dataset card; none for served
    models (their weights are on the server) or models whose weights are not here."""
    by_folder: dict[Path, str] = {}  # the rewriter and the judge are often one model
    digests = {}
    for role in dict.fromkeys(roles):
        if models.ROLES[role].kind == "chat" and bench.models.server:
            continue
        specs = [models.resolve(role, name) for name in bench.models.chosen(role)]
        if all(spec.present for spec in specs):
            for spec in specs:
                if spec.path not in by_folder:
                    by_folder[spec.path] = sha256_file(spec.path)
            digests[role] = [by_folder[spec.path] for spec in specs]
    return digests


def _estimate(phases: list[Phase], records: int, seconds_per_reply: float, pace_of: str) -> str | None:
    """How long the `phases` would take on `records` records at the pace measured so far. Only model replies
    are counted (they take nearly all of a run's time), as many as each phase may ask; None if no reply."""
    replies = 0
    for phase in phases:
        asks, records = phase.workload(records)
        replies += asks
    if not replies:
        return None
    minutes = round(replies * seconds_per_reply / 60)
    left = f"up to about {minutes // 60} h {minutes % 60} min" if minutes >= 60 else \
        f"up to about {minutes} min" if minutes else "less than a minute"
    return (f"estimate: the rest of the run takes {left} ({replies} replies at most, "
            f"at {seconds_per_reply:.2f} s each as in {pace_of})")


def _write_phase(out_dir: Path, number: int, phase: Phase, outcome: Outcome) -> PhaseEntry:
    entry = PhaseEntry("done", output=f"{number}-{phase.name}.jsonl")
    write_records(out_dir / entry.output, outcome.records)
    for name, side in outcome.side.items():
        entry.side[name] = f"{number}-{phase.name}-{name}.jsonl"
        write_records(out_dir / entry.side[name], side)
    entry.output_sha256 = sha256_file(out_dir / entry.output)
    entry.records_out, entry.stats = len(outcome.records), outcome.stats
    entry.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return entry


def _last_output(manifest: Manifest) -> str | None:
    """The output file of the last finished phase so far."""
    outputs = [entry.output for entry in manifest.phases.values() if entry.output]
    return outputs[-1] if outputs else None


def _outputs_intact(out_dir: Path, entry: PhaseEntry) -> bool:
    path = out_dir / (entry.output or "")
    return entry.done and path.is_file() and sha256_file(path) == entry.output_sha256


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path | str) -> str:
    """A file's digest; for a folder (a `datasets` input), of its files' names and contents."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
