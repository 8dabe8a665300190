"""`lift-local ab`: fine-tune one base model on each arm, evaluate the base model and every arm on the same
items, and say what the differences allow.

Arms are record files (`--arm NAME=FILE`) or the three a run folder holds: `curated` (its curated set),
`random` (the quality phase's random baseline of the same size) and `input` (every record the run read).
Everything that can be wrong with the input is checked before any training starts (`plan`): arms that are
missing, empty or too small for one optimizer step, unknown benchmarks, a missing base model, held-out
records that an arm also holds. Then each arm is trained (`train.train`: skipped when unchanged, resumed
when interrupted), each model evaluated (`evaluate.evaluate`: resumed per item), and the results written
(`results`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import card, models, pipeline
from ..errors import ConfigError, InputError
from ..figures import duration
from ..manifest import Manifest
from ..records import Record, read_records
from ..report import write_report
from . import device, results, train
from .benchmarks import check_benchmarks
from .evaluate import ItemScores, evaluate
from .recipe import Recipe

BASE = "base"  # the untouched base model's row: no arm may take the name
RUN_ARMS = ("curated", "random", "input")


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    path: Path  # where its records come from, named in messages and results
    records: list[Record]
    left_out: int = 0  # records with no answer token to train on (see `train.answer_tokens`)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked comparison: what `run_ab` trains and evaluates."""

    arms: list[Arm]
    base: Path  # the base model's folder
    base_name: str  # as the registry names it, or the folder
    recipe: Recipe
    benchmarks: list[str]
    limit: int | None
    heldout: list[Record] | None
    heldout_path: Path | None


def parse_arm(option: str) -> tuple[str, Path]:
    """`NAME=FILE` of `--arm`; ValueError when it is not that."""
    name, sep, path = (part.strip() for part in option.partition("="))
    if not sep or not name or not path:
        raise ValueError(f"expected NAME=FILE (e.g. curated=out/curated.jsonl), got {option!r}")
    return name, Path(path)


def arms_from_files(named: Iterable[tuple[str, Path]], fields: Mapping[str, str] | None = None) -> list[Arm]:
    """Arms from record files in any format lift-local reads; a missing or empty file is an `InputError`."""
    return [Arm(name, path, read_records(path, fields)) for name, path in named]


def arms_from_run(run_dir: Path) -> list[Arm]:
    """A run folder's arms: `curated`, `random` (the quality phase's baseline, when that phase ran) and `input`
    (the records the run read: its input file, its --limit sample and --field mapping)."""
    manifest = Manifest.load(run_dir)
    where = run_dir / "manifest.json"
    if manifest.curated is None:
        raise InputError(where, None, "the run has not finished: it wrote no curated set yet")
    arms = [Arm("curated", run_dir / manifest.curated, read_records(run_dir / manifest.curated))]
    quality = manifest.phases.get("quality")
    if quality is not None and quality.done and "baseline" in quality.side:
        path = run_dir / quality.side["baseline"]
        arms.append(Arm("random", path, read_records(path)))
    source = manifest.input
    path = Path(source["path"])
    if not path.exists():
        raise InputError(path, None, f"the run's input is gone (named in {where})")
    if pipeline.sha256_file(path) != source["sha256"]:
        raise InputError(path, None, f"changed since the run read it (sha256 in {where}): the input arm would "
                                     "not be what the run curated")
    records = pipeline.sample(read_records(path, source.get("fields")), source.get("limit"), source.get("seed", 0))
    arms.append(Arm("input", path, records))
    return arms


def plan(arms: Sequence[Arm], recipe: Recipe, *, base: str | None = None, benchmarks: Sequence[str] = (),
         limit: int | None = None, heldout: Path | None = None, fields: Mapping[str, str] | None = None) -> Plan:
    """Check everything before anything is trained; a `LiftError` says what is wrong.

    `base`: a registered model name or a model folder (default: the registry's student). `fields` maps the
    held-out file's columns, as `read_records` does.
    """
    if not arms:
        raise ConfigError("no arm to train: give a run folder, or --arm NAME=FILE (repeatable)")
    names = [arm.name for arm in arms]
    for name in names:
        if name == BASE:
            raise ConfigError(f"an arm cannot be named '{BASE}': that is the untouched base model's row")
        if names.count(name) > 1:
            raise ConfigError(f"two arms are named '{name}'")
    check_benchmarks(benchmarks)
    if not benchmarks and heldout is None:
        raise ConfigError("nothing to evaluate on: give benchmarks, or --heldout FILE, or both")
    spec = models.resolve("student", base)
    folder = models.ensure_present(spec)
    held = read_records(heldout, fields) if heldout is not None else None
    if held is not None:
        if len(held) < 2:
            raise InputError(heldout, None, "holds one record: an interval over held-out records needs at least 2")
        _check_disjoint(heldout, held, arms)
    tokenizer = train.load_tokenizer(folder)
    checked = []
    for arm in arms:
        counts = train.answer_tokens(arm.records, tokenizer, recipe.max_length)
        usable = [record for record, count in zip(arm.records, counts, strict=True) if count]
        if len(usable) < recipe.examples_per_step:
            left_out = f" ({len(arm.records) - len(usable)} of its {len(arm.records)} have no answer within " \
                       f"{recipe.max_length} tokens)" if len(usable) < len(arm.records) else ""
            records = f"{len(usable)} record{'' if len(usable) == 1 else 's'}"
            raise InputError(arm.path, None, f"arm {arm.name} has {records} to train on{left_out}, "
                             f"fewer than one optimizer step takes ({recipe.batch_size} x {recipe.gradient_accumulation}"
                             f" = {recipe.examples_per_step}): give it more records or lower --batch-size")
        checked.append(dataclasses.replace(arm, records=usable, left_out=len(arm.records) - len(usable)))
    return Plan(checked, folder, spec.name, recipe, list(benchmarks), limit, held, heldout)


def run_ab(plan: Plan, out_dir: Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every arm, evaluate the base model and every arm, and write `results.json`, the table and the figure
    into `out_dir`; returns the results. Started again, finished arms and evaluated items are reused."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    recipe = plan.recipe
    echo(f"base model: {plan.base_name}" + (f" ({plan.base})" if plan.base_name != str(plan.base) else ""))
    for arm in plan.arms:
        note = f"; {arm.left_out} left out: no answer within max_length" if arm.left_out else ""
        echo(f"arm {arm.name}: {len(arm.records)} records from {arm.path}{note}")
    echo(f"recipe: {recipe.describe()}; computed in {device.precision()}")
    seconds: dict[str, dict[str, float]] = {"train": {}, "evaluate": {}}
    trained = {}
    for number, arm in enumerate(plan.arms, start=1):
        label = f"[{number}/{len(plan.arms)}] training {arm.name}"
        began = time.perf_counter()
        trained[arm.name] = done = train.train(plan.base, arm.records, recipe, out_dir / "arms" / arm.name, label=label)
        seconds["train"][arm.name] = round(time.perf_counter() - began, 1)
        if done.trained_now:
            resumed = f", resumed at step {done.resumed_from}" if done.resumed_from is not None else ""
            first, last = done.epoch_losses(recipe.epochs)
            echo(f"{label}: {done.steps} steps in {duration(done.seconds)}{resumed}, mean loss {first:.3f} in the "
                 f"first epoch → {last:.3f} in the last")
        else:
            echo(f"{label}: unchanged, adapter {done.adapter}")
    scores: dict[str, dict[str, ItemScores]] = {}
    for name, adapter in [(BASE, None), *((arm.name, trained[arm.name].adapter) for arm in plan.arms)]:
        began = time.perf_counter()
        scores[name] = evaluate(plan.base, adapter, plan.benchmarks, limit=plan.limit, seed=recipe.seed,
                                heldout=plan.heldout, work_dir=out_dir / "eval" / name,
                                progress_label=f"evaluating {name}")
        seconds["evaluate"][name] = round(time.perf_counter() - began, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    summary = {
        "base": {"name": plan.base_name, "path": str(plan.base)},
        "recipe": dataclasses.asdict(recipe),
        "precision": device.precision(),
        "evaluation": {"benchmarks": plan.benchmarks, "limit": plan.limit, "seed": recipe.seed,
                       "heldout": None if plan.heldout_path is None else
                       {"file": str(plan.heldout_path), "records": len(plan.heldout)}},
        "arms": {arm.name: _arm_entry(arm, trained[arm.name], recipe.epochs) for arm in plan.arms},
        **results.statistics(scores, [arm.name for arm in plan.arms], base=BASE),
        "seconds": seconds,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    results.write(out_dir, summary)
    return summary


def _arm_entry(arm: Arm, done: train.Trained, epochs: int) -> dict[str, Any]:
    first, last = done.epoch_losses(epochs)
    return {"file": str(arm.path), "sha256": pipeline.sha256_file(arm.path), "records": len(arm.records),
            "left_out": arm.left_out, "training": {
                "steps": done.steps, "tokens": done.tokens, "seconds": done.seconds,
                "tokens_per_second": done.tokens_per_second, "first_epoch_loss": first,
                "last_epoch_loss": last, "adapter": str(done.adapter)}}


def _check_disjoint(path: Path, heldout: list[Record], arms: Sequence[Arm]) -> None:
    """Held-out records must be ones no arm trained on: none may share its instruction and input with an arm's
    record (whitespace and case aside)."""
    def key(record: Record) -> tuple[str, str]:
        return " ".join(record.instruction.split()).lower(), " ".join(record.input.split()).lower()

    held = {key(record): record for record in heldout}
    for arm in arms:
        shared = [held[key(record)] for record in arm.records if key(record) in held]
        if shared:
            shared = list({record.id: record for record in shared}.values())
            raise InputError(path, None, f"{len(shared)} of its {len(heldout)} records are also in arm {arm.name} "
                             f"(same instruction and input, e.g. id {shared[0].id}): held-out records must be ones "
                             "no arm trains on")


def attach_to_run(run_dir: Path, out_dir: Path, summary: Mapping[str, Any]) -> None:
    """The results into the run folder they came from: manifest.json's `ab` entry, report.html's section and
    the dataset card."""
    manifest = Manifest.load(run_dir)
    folder = Path(out_dir).resolve()
    where = folder.relative_to(run_dir.resolve()) if folder.is_relative_to(run_dir.resolve()) else folder
    manifest.ab = {"folder": str(where), **summary}
    manifest.save(run_dir)
    write_report(run_dir)
    card.write_card(run_dir)
