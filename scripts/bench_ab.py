"""The measurements of `lift-local ab` in docs/ab.md; each prints a Markdown report.

    demo RUN [ARGS...]     `lift-local ab RUN --limit 200 --heldout FILE ARGS` on a run folder (the demo's:
                           out/demo), FILE 200 Code Alpaca records the run did not read; timed: total,
                           training per arm, evaluation per model, the results with their intervals.
    sensitivity            Can the measure see a real difference? The same instructions with their own answers
                           (correct) against the answers shuffled between records (shuffled), on the held-out NLL
                           of records neither arm holds.
    selection              The variety and quality phases alone (no generation: `run --skip enhance --skip
                           expand`) on a pool of Code Alpaca, their curated set against a random set of the same
                           size from the same pool, on held-out records and the default benchmarks.

Every command runs lift-local as a user does (`python -m lift_local`, a child process), so its times are a
user's. Files go under --out (default out/bench_ab); started again, each step resumes where it stopped.

    .venv/bin/python scripts/bench_ab.py demo out/demo
    .venv/bin/python scripts/bench_ab.py sensitivity [--records 100] [--heldout 200]
    .venv/bin/python scripts/bench_ab.py selection [--heldout 200] [--top 100]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # the shared data beside the checkout
LIFT_LOCAL = [sys.executable, "-m", "lift_local"]


def lift_local(*args: object) -> float:
    """Runs a lift-local command (its output on this terminal); its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([*LIFT_LOCAL, *map(str, args)], check=True, cwd=REPO)
    return time.perf_counter() - started


def report(out: Path, seconds: float, command: str) -> str:
    """Markdown: the command, its time, training per arm, evaluation per model, the table and the verdicts."""
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    lines = [f"`{command}`: {seconds / 60:.1f} min in all on this machine.", "",
             "| arm | records | training steps | tokens | training | tokens/s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, arm in results["arms"].items():
        done = arm["training"]
        rate = f"{done['tokens_per_second']:.0f}" if done["tokens_per_second"] else "(resumed)"
        lines.append(f"| {name} | {arm['records']} | {done['steps']} | {done['tokens']} | {done['seconds'] / 60:.1f} min | {rate} |")
    evaluated = ", ".join(f"{name} {s / 60:.1f} min" for name, s in results["seconds"]["evaluate"].items())
    lines += ["", f"Evaluation (this call): {evaluated}.", "", "```text", (out / "table.txt").read_text().rstrip(), "```"]
    return "\n".join(lines)


def demo(args: argparse.Namespace) -> None:
    """With --heldout N: N records of Code Alpaca that the run did not read (the demo's sample is Code Alpaca)."""
    run = Path(args.run)
    extra = ["--limit", "200", *args.rest]
    if args.heldout:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        read = json.loads((REPO / manifest["input"]["path"]).read_text(encoding="utf-8"))
        seen = {(r["instruction"], r.get("input", "")) for r in read}
        unseen = [r for r in json.loads((DATA / "code_alpaca_2k.json").read_text(encoding="utf-8"))
                  if (r["instruction"], r.get("input", "")) not in seen and r["output"].strip()]
        held = random.Random(args.seed).sample(unseen, args.heldout)
        extra += ["--heldout", write(Path(args.out) / "demo-heldout.json", held)]
    seconds = lift_local("ab", run, *extra)
    print(report(run / "ab", seconds, " ".join(["lift-local ab", str(run), *map(str, extra)])))


def split(records: list[dict], heldout: int, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded split into (the rest, `heldout` records), each in the file's order; records whose instruction
    and input repeat are kept on one side (held-out records must be ones no arm holds)."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:heldout])
    held_keys = {(records[i]["instruction"], records[i].get("input", "")) for i in chosen}
    rest = [r for i, r in enumerate(records) if i not in chosen and (r["instruction"], r.get("input", "")) not in held_keys]
    return rest, [records[i] for i in sorted(chosen)]


def write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def sensitivity(args: argparse.Namespace) -> None:
    out = Path(args.out) / "sensitivity"
    records = [r for r in json.loads((DATA / args.data).read_text(encoding="utf-8")) if r["output"].strip()]
    rest, held = split(records, args.heldout, args.seed)
    train = random.Random(args.seed).sample(rest, args.records)
    answers = [r["output"] for r in train]
    shift = random.Random(args.seed + 1).randrange(1, len(answers))  # a rotation: no record keeps its answer
    shuffled = [{**r, "output": answers[(i + shift) % len(answers)]} for i, r in enumerate(train)]
    command = ["ab", "--arm", f"correct={write(out / 'correct.json', train)}",
               "--arm", f"shuffled={write(out / 'shuffled.json', shuffled)}",
               "--heldout", write(out / "heldout.json", held), "--benchmarks", "none", "--out", out / "ab", *args.rest]
    seconds = lift_local(*command)
    print(report(out / "ab", seconds, " ".join(["lift-local", *map(str, command)])))


def selection(args: argparse.Namespace) -> None:
    out = Path(args.out) / "selection"
    records = json.loads((DATA / args.data).read_text(encoding="utf-8"))
    pool, held = split(records, args.heldout, args.seed)
    run = out / "run"
    run_command = ["run", write(out / "pool.json", pool), "--out", run, "--skip", "enhance", "--skip", "expand",
                   "--set", f"quality.top={args.top}"]
    run_seconds = lift_local(*run_command)
    curated = [json.loads(line) for line in (run / "curated.jsonl").read_text(encoding="utf-8").splitlines()]
    baseline = random.Random(args.seed).sample(pool, len(curated))
    command = ["ab", "--arm", f"curated={run / 'curated.jsonl'}", "--arm", f"random={write(out / 'random.json', baseline)}",
               "--heldout", write(out / "heldout.json", held), "--limit", "200", "--out", out / "ab", *args.rest]
    seconds = lift_local(*command)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    phases = ", ".join(f"{name} {entry.get('records_in', '')}→{entry.get('records_out', '')} in {entry.get('seconds', 0):.0f} s"
                       for name, entry in manifest["phases"].items() if entry["status"] == "done")
    print(f"`lift-local {' '.join(map(str, run_command))}`: {run_seconds / 60:.1f} min ({phases}).\n")
    print(report(out / "ab", seconds, " ".join(["lift-local", *map(str, command)])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/bench_ab", help="folder of the data, runs and results")
    parser.add_argument("--seed", type=int, default=0)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="lift-local ab on a run folder, timed")
    run.add_argument("run")
    run.add_argument("--heldout", type=int, default=200, help="held-out Code Alpaca records (0: none)")
    run.set_defaults(action=demo)
    sense = commands.add_parser("sensitivity", help="correct against shuffled answers on held-out NLL")
    sense.add_argument("--data", default="code_alpaca_2k.json")
    sense.add_argument("--records", type=int, default=100, help="records of each arm")
    sense.add_argument("--heldout", type=int, default=200)
    sense.set_defaults(action=sensitivity)
    select = commands.add_parser("selection", help="variety and quality alone against random of the same size")
    select.add_argument("--data", default="code_alpaca_2k.json")
    select.add_argument("--heldout", type=int, default=200)
    select.add_argument("--top", type=int, default=100, help="records quality keeps")
    select.set_defaults(action=selection)
    args, args.rest = parser.parse_known_args()
    args.action(args)


if __name__ == "__main__":
    main()
