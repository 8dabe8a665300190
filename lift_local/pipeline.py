"""`lift-local run`: enhance → expand → variety → quality in one resumable run folder.

Each phase's output is a file in the run folder, and the manifest records a fingerprint of what produced it
(its parameters, models, prompt and the exact records it read). Started again, a phase whose fingerprint is
unchanged is skipped; a changed one re-runs, and so do the phases after it whose input changed. Inside a
phase, the reply and embedding caches in `cache/` make an interrupted phase redo only what is missing.
"""

from __future__ import annotations

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

import click

from . import exports
from .config import RunConfig
from .enhance import enhance
from .expand import expand
from .quality import quality
from .records import Record, atomic_path, read_records, write_records
from .variety import variety
from .workbench import Workbench

MANIFEST = "manifest.json"
CURATED = "curated.jsonl"


@dataclasses.dataclass
class PhaseOutput:
    """What a phase hands back to the pipeline: the records for the next phase, side files, and stats."""

    records: list[Record]
    side_files: dict[str, list[Record]] = dataclasses.field(default_factory=dict)  # manifest key -> records
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


def _run_enhance(records: list[Record], params, bench: Workbench) -> PhaseOutput:
    result = enhance(records, bench.rewriter(), params, *bench.phase_prompts("enhance", params))
    return PhaseOutput(result.records, stats=result.stats)


def _run_expand(records: list[Record], params, bench: Workbench) -> PhaseOutput:
    result = expand(records, bench.rewriter(), params, *bench.phase_prompts("expand", params))
    return PhaseOutput(result.records, stats=result.stats)


def _run_variety(records: list[Record], params, bench: Workbench) -> PhaseOutput:
    kept, dropped, selection = variety(records, bench.embedder(), params)
    return PhaseOutput(kept, {"dropped": dropped}, selection.stats())


def _run_quality(records: list[Record], params, bench: Workbench) -> PhaseOutput:
    result = quality(records, bench.judge(), params, *bench.phase_prompts("quality", params))
    return PhaseOutput(result.kept, {"scored": result.scored, "baseline": result.baseline}, result.stats)


RUNNERS: dict[str, Callable[[list[Record], Any, Workbench], PhaseOutput]] = {
    "enhance": _run_enhance,
    "expand": _run_expand,
    "variety": _run_variety,
    "quality": _run_quality,
}


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
    echo: Callable[[str], None] = click.echo,
) -> dict[str, Any]:
    """Run (or resume) every phase into `out_dir`; returns the manifest.

    `fields` maps lift-local's field names to the input's columns (`read_records`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    records = sample(read_records(input_path, fields), limit, seed)
    manifest = _load_manifest(out_dir)
    manifest.update(
        lift_local_version=version("lift-local"),
        input={"path": str(Path(input_path).resolve()), "sha256": _sha256_file(input_path), "records": len(records),
               "limit": limit, "seed": seed,
               # A changed mapping re-runs every phase; without one, earlier runs' fingerprints stand.
               **({"fields": fields} if fields else {})},
        models=bench.identities(),
    )
    # Resolved up front, so that a bad template or model name fails now rather than hours into the run.
    decided_by = {phase: bench.fingerprint_inputs(phase, config.params[phase]) for phase in config.phases}
    upstream = _digest(manifest["input"])
    old_phases = manifest.get("phases", {})
    manifest["phases"] = {}
    current: list[Record] | None = records
    for number, phase in enumerate(config.params, start=1):
        label = f"[{number}/{len(config.params)}] {phase}"
        if phase in config.skip:
            manifest["phases"][phase] = {"status": "skipped"}
            echo(f"{label}: skipped")
            continue
        params = config.params[phase]
        fingerprint = _digest({"phase": phase, "params": dataclasses.asdict(params), "upstream": upstream,
                               **decided_by[phase]})
        entry = old_phases.get(phase, {})
        if entry.get("fingerprint") == fingerprint and _outputs_intact(out_dir, entry):
            manifest["phases"][phase] = entry
            current = None  # read lazily, only if a later phase has to run
            echo(f"{label}: unchanged since {entry['finished']}, kept {entry['records_out']} records")
        else:
            if current is None:
                current = read_records(out_dir / _previous_output(manifest, phase))
            started = time.perf_counter()
            result = RUNNERS[phase](current, params, bench)
            entry = _write_phase(out_dir, number, phase, result)
            entry.update(fingerprint=fingerprint, params=dataclasses.asdict(params), records_in=len(current),
                         seconds=round(time.perf_counter() - started, 1))
            manifest["phases"][phase] = entry
            _save_manifest(out_dir, manifest)
            current = result.records
            echo(f"{label}: {entry['records_in']} → {entry['records_out']} records in {entry['seconds']} s")
        upstream = entry["output_sha256"]
    final = _previous_output(manifest, None)
    curated = current if current is not None else read_records(out_dir / final)
    write_records(out_dir / CURATED, curated)
    manifest["curated"] = CURATED
    manifest["exports"] = {fmt: exports.write(out_dir, curated, fmt) for fmt in formats}
    _save_manifest(out_dir, manifest)
    return manifest


def sample(records: list[Record], limit: int | None, seed: int) -> list[Record]:
    """A seeded sample of `limit` records, in their original order."""
    if limit is None or limit >= len(records):
        return records
    if limit < 1:
        raise click.BadParameter(f"must be at least 1, got {limit}", param_hint="--limit")
    chosen = sorted(random.Random(seed).sample(range(len(records)), limit))
    return [records[i] for i in chosen]


def _write_phase(out_dir: Path, number: int, phase: str, result: PhaseOutput) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": "done", "output": f"{number}-{phase}.jsonl"}
    write_records(out_dir / entry["output"], result.records)
    for key, side in result.side_files.items():
        entry[key] = f"{number}-{phase}-{key}.jsonl"
        write_records(out_dir / entry[key], side)
    entry.update(output_sha256=_sha256_file(out_dir / entry["output"]), records_out=len(result.records),
                 stats=result.stats, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return entry


def _previous_output(manifest: dict[str, Any], phase: str | None) -> str | None:
    """The output file of the last finished phase before `phase` (before the end, for None)."""
    output = None
    for name, entry in manifest["phases"].items():
        if name == phase:
            break
        output = entry.get("output", output)
    return output


def _outputs_intact(out_dir: Path, entry: dict[str, Any]) -> bool:
    path = out_dir / entry.get("output", "")
    return entry.get("status") == "done" and path.is_file() and _sha256_file(path) == entry.get("output_sha256")


def _load_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise click.ClickException(f"{path}: not a lift-local manifest ({err}); use a new --out folder") from None


def _save_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _sha256_file(path: Path | str) -> str:
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
