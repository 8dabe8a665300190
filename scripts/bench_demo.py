"""The demo's wall time against an earlier release's on this machine; writes a Markdown report (docs/bench_demo.md).

The same command both times, `lift-local run` on the bundled sample with scripts/demo.toml as
scripts/demo.sh runs it (set-up done), into an empty run folder: once with the code of --baseline (by
default ffa818b, the first release, whose demo the "fast and quiet" issue timed at 12 min 7 s on its
machine) and once with this checkout's. Both use this environment's packages and prepared models; only the
code differs: its engine set-up (dtype, preloads, cores), its phases and its prompts. Variables that
decide the engine set-up (vLLM's, OpenMP's, LD_PRELOAD) are removed from both runs' environment.

The two run in turn, --repeat times (alternating order); the report gives medians and each phase's time
from the runs' manifests. --limit N runs both on the same seeded N of the sample's 120 records (the old
set-up takes over an hour for the whole demo on 2 AVX2 cores).

    .venv/bin/python scripts/bench_demo.py [--baseline ffa818b] [--limit N] [--repeat 1] [--out docs/bench_demo.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lift_local, for the figure
DEMO = ["run", "lift_local/data/code_alpaca_sample.json", "--config", "scripts/demo.toml"]
# `-c` puts the working folder first on sys.path: each side imports the lift_local of its own code.
LIFT_LOCAL = [sys.executable, "-c", "from lift_local.cli import main; main()"]
MANAGED_PREFIXES = ("VLLM_", "OMP_", "KMP_", "GOMP_")
MANAGED = ("LD_PRELOAD",)


def extract(revision: str, folder: Path) -> None:
    """The files of `revision` in `folder`."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")


def describe(revision: str) -> str:
    """A revision's short hash, date and subject, for the report."""
    return subprocess.run(["git", "log", "-1", "--format=%h (%ad): %s", "--date=short", revision], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()


def demo(code: Path, out: Path, log: Path, limit: int | None) -> dict:
    """One demo run of the code in `code` into `out`; its wall time and the manifest's phases."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(MANAGED_PREFIXES) and key not in MANAGED}
    started = time.perf_counter()
    with open(log, "w") as output:
        done = subprocess.run([*LIFT_LOCAL, *DEMO, "--out", str(out), *(["--limit", str(limit)] if limit else [])],
                              cwd=code, env=env, stdout=output, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the demo of {code} failed (exit {done.returncode}); the end of its output:\n"
                 f"{log.read_text(errors='replace')[-3000:]}")
    phases = json.loads((out / "manifest.json").read_text())["phases"]
    return {"seconds": seconds, "phases": {name: {key: entry.get(key) for key in ("seconds", "records_in", "records_out")}
                                           for name, entry in phases.items() if entry.get("seconds") is not None}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="ffa818b", help="the earlier release's git revision")
    parser.add_argument("--limit", type=int, help="run both on this many of the sample's records")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_demo.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as temp:
        temp = Path(temp)
        baseline = temp / "baseline"
        baseline.mkdir()
        extract(args.baseline, baseline)
        described = {"baseline": describe(args.baseline), "this checkout": describe("HEAD")}
        code = {"baseline": baseline, "this checkout": ROOT}
        load_before = os.getloadavg()
        runs: dict[str, list[dict]] = {side: [] for side in code}
        for turn in range(args.repeat):
            order = list(code) if turn % 2 == 0 else list(code)[::-1]
            for side in order:
                name = side.replace(" ", "-")
                result = demo(code[side], temp / f"{name}-{turn}", temp / f"{name}-{turn}.log", args.limit)
                runs[side].append(result)
                print(f"round {turn + 1}: {side}: {result['seconds']:.0f} s", flush=True)
        load_after = os.getloadavg()

    medians = {side: statistics.median(run["seconds"] for run in runs[side]) for side in runs}
    ratio = medians["baseline"] / medians["this checkout"]
    phases = list(dict.fromkeys(name for side in ("this checkout", "baseline") for name in runs[side][0]["phases"]))

    def cell(side: str, phase: str) -> str:
        entry = runs[side][0]["phases"].get(phase)
        return f"{entry['seconds']:.0f} s ({entry['records_in']} → {entry['records_out']})" if entry else "not in it"

    rows = "\n".join(f"| {side} | {described[side]} | {medians[side]:.0f} | "
                     f"{', '.join(str(round(run['seconds'])) for run in runs[side])} |" for side in runs)
    phase_rows = "\n".join(f"| {phase} | {cell('baseline', phase)} | {cell('this checkout', phase)} |" for phase in phases)
    figure_path = args.out.with_suffix(".png")
    plot(runs, phases, figure_path)
    flags = [flag for flag in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if flag in _cpu_flags()]
    command = "scripts/bench_demo.py " + shlex.join(sys.argv[1:])
    load = " / ".join(f"{x:.1f}" for x in load_before) + " before, " + " / ".join(f"{x:.1f}" for x in load_after) + " after"
    report = f"""# The demo against an earlier release, on one machine

Measured {datetime.datetime.now():%Y-%m-%d %H:%M} (machine's local time) with `.venv/bin/python {command}`:
`lift-local run` on {f"a seeded {args.limit} of the bundled sample's records (`--limit {args.limit}`)" if args.limit else "the bundled sample"}
with `scripts/demo.toml` (what `scripts/demo.sh` runs once set up), into an empty run folder, with each side's code and this environment's packages and prepared models.
Machine: {platform.machine()}, {os.cpu_count()} CPUs ({', '.join(flags) or 'no AVX2'}), Python {platform.python_version()};
load average (1 / 5 / 15 min; the demo's own engine counts about 2 on 2 cores) {load}.

| code | revision | wall time (s), median | runs (s) |
| --- | --- | ---: | --- |
{rows}

**This checkout runs the demo in {1 / ratio:.2f} of the baseline's time ({ratio:.2f}x as fast).**

Each phase (first run; seconds from the run's manifest, records in → out):

| phase | baseline | this checkout |
| --- | --- | --- |
{phase_rows}

![each side's wall time, split by phase]({figure_path.name})
"""
    args.out.write_text(report, encoding="utf-8")
    print(report)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), "").split())


def plot(runs: dict[str, list[dict]], phases: list[str], path: Path) -> None:
    from lift_local import figures

    figure, (ax,) = figures.new_figure(7, 2.2)
    colours = [figures.BLUE, figures.ORANGE, figures.VERMILLION, figures.GREY, "#009E73", "#CC79A7"]
    for phase, colour in zip(phases, colours, strict=False):
        ax.barh(0, 0, color=colour, label=phase)  # the legend, once per phase
    for y, side in enumerate(runs):
        left = 0.0
        for phase, colour in zip(phases, colours, strict=False):
            seconds = (runs[side][0]["phases"].get(phase) or {}).get("seconds") or 0
            ax.barh(y, seconds, left=left, color=colour)
            left += seconds
        ax.text(runs[side][0]["seconds"], y, f" {runs[side][0]['seconds']:.0f} s in all", va="center")
    ax.set_yticks(range(len(runs)), list(runs))
    ax.invert_yaxis()
    ax.set_xlabel("seconds (each phase, from the run's manifest; the total includes start-up)")
    ax.legend(ncol=len(phases), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
