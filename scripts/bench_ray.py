"""Benchmark of `lift-local run --ray` against the in-process path; writes a Markdown report (docs/bench_ray.md).

The same work on both: the quality phase (the judge's map, then select) on the same Code Alpaca records,
with the judge role's model, on an empty reply cache each time, so that every record is judged. Each
measurement runs in a fresh process and counts everything a phase pays when it runs: importing vLLM,
starting the engine, judging, and on Ray the replicas' actors and moving records and results. Only
connecting to Ray (a one-machine cluster this script starts, on loopback) is not counted.

- in process: `Local`, one engine in this process, the whole input as one batch.
- Ray, 1 replica: goal at least 0.8x the in-process rate.
- Ray, 2 replicas: each holds an engine and gets half the records.

The three run in turn, --repeat times (alternating order), and the report gives medians.

    .venv/bin/python scripts/bench_ray.py [--records 96] [--repeat 2] [--out docs/bench_ray.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lift-local, wherever the environment's is installed from
DATA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"  # the shared data beside the checkout
SIDES = {"in process": None, "Ray, 1 replica": 1, "Ray, 2 replicas": 2}


def measure(records: int, replicas: int | None) -> dict:
    """One timed quality phase in this process; `replicas` None: in process."""
    from lift_local.config import load_config
    from lift_local.phases.quality import Quality
    from lift_local.pipeline import executor_for
    from lift_local.records import read_records
    from lift_local.workbench import Workbench

    batch = read_records(DATA)[:records]
    cluster = load_config(run={"ray": "local", "replicas": replicas} if replicas else {}).cluster
    with tempfile.TemporaryDirectory() as cache, Workbench(Path(cache)) as bench, executor_for(cluster, bench) as executor:
        if replicas:
            executor.connect()
        started = time.perf_counter()
        outcome = Quality().run(batch, executor)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "judged": outcome.stats["ok"], "records": len(batch)}


def child(records: int, replicas: int | None) -> dict:
    """`measure` in a fresh process (it pays vLLM's import and engine start like a real run does)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray on loopback, not the network address
    with tempfile.TemporaryDirectory() as folder:  # a file, not stdout: vLLM and Ray log to stdout too
        result = Path(folder) / "result.json"
        argv = [sys.executable, __file__, "--child", "--records", str(records), "--result", str(result)]
        argv += ["--replicas", str(replicas)] if replicas else []
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not result.is_file():
            sys.exit(f"measurement failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=96)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_ray.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.result.write_text(json.dumps(measure(args.records, args.replicas)))
        return

    load_before = os.getloadavg()
    seconds: dict[str, list[float]] = {label: [] for label in SIDES}
    for round in range(args.repeat):
        order = list(SIDES) if round % 2 == 0 else list(SIDES)[::-1]
        for label in order:
            result = child(args.records, SIDES[label])
            seconds[label].append(result["seconds"])
            print(f"round {round + 1}: {label}: {result['seconds']:.1f} s, judged {result['judged']}", flush=True)
    load = f"{' / '.join(f'{x:.1f}' for x in load_before)} before, {' / '.join(f'{x:.1f}' for x in os.getloadavg())} after"
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    base = medians["in process"]
    rows = [f"| {label} | {medians[label]:.1f} | {args.records / medians[label]:.2f} | {base / medians[label]:.2f}x | "
            f"{', '.join(f'{s:.1f}' for s in seconds[label])} |" for label in SIDES]
    command = "scripts/bench_ray.py " + shlex.join(sys.argv[1:])
    figure_path = args.out.with_suffix(".png")
    plot(seconds, args.records, figure_path)
    report = f"""# Ray path against the in-process path

Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},
with `{command}`: the quality phase on {args.records} Code Alpaca records, the packaged judge (SmolLM2-135M,
vLLM on CPU), an empty reply cache each time; every measurement in a fresh process (vLLM import, engine
start and judging counted), medians of {args.repeat} runs in alternating order. Load average (1 / 5 / 15
min; the measurements' own engines count about 2 on 2 cores) {load}.

| path | seconds | records/s | vs in process | runs (s) |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Goal: Ray with one replica at least 0.8x in process.

![records per second of each path: medians as bars, each run as a dot]({figure_path.name})
"""
    args.out.write_text(report, encoding="utf-8")
    print(report)


def plot(seconds: dict[str, list[float]], records: int, path: Path) -> None:
    from lift_local import figures

    figure, (ax,) = figures.new_figure(7, 2.4)
    labels = list(seconds)
    ax.barh(labels, [records / statistics.median(seconds[label]) for label in labels], color=figures.BLUE)
    for y, label in enumerate(labels):
        ax.plot([records / s for s in seconds[label]], [y] * len(seconds[label]), "o", color=figures.GREY)
    ax.invert_yaxis()
    ax.set_xlabel(f"records judged per second ({records} records, engine start included)")
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
