"""Times the test suite of an earlier revision and of this checkout, one after the other on this machine, and
this checkout's fast tier (`-m fast`), writing docs/bench_tests.md.

The earlier revision's files are extracted beside the repository (so that its tests find ../shared as this
checkout's do) and run with this environment's packages and prepared models. Each suite runs in a fresh
process; their wall times are the figures, each suite's slowest tests are listed.

    .venv/bin/python scripts/bench_tests.py [--before f3ba5a0] [--out docs/bench_tests.md]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchlib import load, machine

ROOT = Path(__file__).resolve().parents[1]
SLOWEST = 12  # tests listed per suite


def extract(revision: str) -> Path:
    """`revision`'s files in a folder beside the repository."""
    folder = ROOT.parent / f".bench-tests-{revision}"
    shutil.rmtree(folder, ignore_errors=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def suite(code: Path, *pytest_args: str) -> dict:
    """One run of pytest in `code`: wall seconds, its summary line and its slowest tests."""
    env = {**os.environ, "LIFT_LOCAL_WEIGHTS": str(ROOT / "models" / "weights"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--durations={SLOWEST}", *pytest_args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = done.stdout.splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "?")
    slowest = [line for line in lines if re.match(r"\d+\.\d+s (call|setup|teardown) ", line)][:SLOWEST]
    return {"seconds": seconds, "summary": summary, "slowest": slowest, "exit": done.returncode}


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="f3ba5a0", help="The earlier revision (default: before the test tiers).")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_tests.md")
    args = parser.parse_args()
    started, loads = datetime.datetime.now(), {"start": load()}
    earlier = extract(args.before)
    try:
        results = {f"whole suite at {args.before}": suite(earlier)}
    finally:
        shutil.rmtree(earlier, ignore_errors=True)
    results["whole suite, this checkout"] = suite(ROOT)
    results["fast tier (-m fast), this checkout"] = suite(ROOT, "-m", "fast")
    loads["end"] = load()
    head = subprocess.run(["git", "log", "-1", "--format=%h (%ad)", "--date=short"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    lines = [
        "# The test suite's time, before and after the test tiers",
        "",
        f"Measured {started:%Y-%m-%d} by `.venv/bin/python scripts/bench_tests.py --before {args.before}`: each suite in a "
        f"fresh process, one after the other, on {machine()}, this checkout at {head}; load average at the start "
        f"{loads['start']}, at the end {loads['end']}.",
        "",
        "| suite | wall time | result |",
        "| --- | ---: | --- |",
        *(f"| {name} | {minutes(r['seconds'])} | {r['summary']} |" for name, r in results.items()),
        "",
        f"This checkout's whole suite takes {results['whole suite, this checkout']['seconds'] / results[f'whole suite at {args.before}']['seconds']:.2f}x "
        "the earlier one's time.",
    ]
    for name, result in results.items():
        lines += ["", f"## Slowest tests: {name}", "", "```text", *result["slowest"], "```"]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if any(result["exit"] != 0 for result in results.values()):
        sys.exit("a suite failed: see its result above")


if __name__ == "__main__":
    main()
