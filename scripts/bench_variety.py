"""Benchmark of the variety phase; prints a Markdown report (docs/bench_variety.md holds the last one).

1. Embedding throughput: lift-local's cached `Embedder` (empty cache) against a bare
   `SentenceTransformer.encode` call on the same texts with the same batch size and the same loaded model,
   in pairs that alternate which side goes first. The ratio within each pair is the number that matters:
   the two runs of a pair are seconds apart, so a change in machine load hits both alike.
2. Selection (`variety.select`) on synthetic 384-dimensional embeddings of growing size, each size in a
   fresh process so that its peak RSS is its own. Times are also given relative to the smallest size.

Wall and CPU time are both reported: on a shared machine CPU time is the steadier of the two.
`--threads 1` makes CPU time steadier still (no threads waiting for each other).

    .venv/bin/python scripts/bench_variety.py [--records 300] [--pairs 8] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the shared data beside the checkout
DIMENSION = 384


def timed(function, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time is the whole process's, all threads."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def embedding_texts(count: int) -> list[str]:
    """Half Code Alpaca, half Dolly: short code answers and long prose, as a real mix would be."""
    from lift_local.records import embedding_text, read_records

    half = count // 2
    records = read_records(DATA / "code_alpaca_2k.json")[:half] + read_records(DATA / "dolly_3k.json")[: count - half]
    return [embedding_text(record) for record in records]


def bench_embedding(texts: list[str], batch_size: int, pairs: int) -> str:
    from lift_local import models
    from lift_local.embed import Embedder
    from lift_local.store import Store

    folder = models.ensure_present(models.resolve("embedder"))
    with tempfile.TemporaryDirectory() as tmp:
        embedder = Embedder(folder, batch_size=batch_size)
        model = embedder.model  # loaded once, outside every timing; both sides use this model object
        model.encode(texts, batch_size=batch_size)  # warm-up: torch prepares kernels per input shape once

        def bare(run: int) -> None:
            model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

        def lift(run: int) -> None:
            embedder.store = Store(Path(tmp) / f"empty{run}.sqlite", "embeddings")
            embedder.embed(texts)

        times: dict[str, list[tuple[float, float]]] = {"bare": [], "lift": []}
        for run in range(pairs):
            for side in ("bare", "lift") if run % 2 == 0 else ("lift", "bare"):
                times[side].append(timed(bare if side == "bare" else lift, run))
        cached = timed(embedder.embed, texts)[0]  # the last store holds every text: a re-run

    n = len(texts)
    rows = ["| | median texts/s, wall | median texts/s, CPU |", "|---|---:|---:|"]
    for side, label in (("bare", "bare `SentenceTransformer.encode`"), ("lift", "lift-local `Embedder.embed`, empty cache")):
        wall, cpu = (statistics.median(column) for column in zip(*times[side]))
        rows.append(f"| {label} | {n / wall:.1f} | {n / cpu:.1f} |")
    rows.append(f"| lift-local `Embedder.embed`, every text cached | {n / cached:,.0f} | |")
    ratios = {kind: [b[i] / l[i] for b, l in zip(times["bare"], times["lift"])] for i, kind in enumerate(("wall", "CPU"))}
    rows += [
        "",
        "**Throughput ratio lift-local / bare, median over pairs: "
        + ", ".join(f"{statistics.median(values):.3f} by {kind} time" for kind, values in ratios.items())
        + "** (goal >= 0.95).",
        "",
        *(f"- per pair, {kind}: {', '.join(f'{r:.3f}' for r in values)}" for kind, values in ratios.items()),
        "- seconds per run (wall / CPU), bare: " + ", ".join(f"{w:.1f} / {c:.1f}" for w, c in times["bare"]),
        "- seconds per run (wall / CPU), lift-local: " + ", ".join(f"{w:.1f} / {c:.1f}" for w, c in times["lift"]),
    ]
    return "\n".join(rows)


def synthetic_embeddings(n: int, seed: int = 0) -> np.ndarray:
    """A slowly decaying spectrum in random directions, generated in chunks to stay float32."""
    rng = np.random.default_rng(seed)
    scales = (np.arange(1, DIMENSION + 1) ** -0.5).astype(np.float32)
    rotation = np.linalg.qr(rng.standard_normal((DIMENSION, DIMENSION)))[0].astype(np.float32)
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for start in range(0, n, 65536):
        rows = min(65536, n - start)
        out[start : start + rows] = (rng.standard_normal((rows, DIMENSION), dtype=np.float32) * scales) @ rotation
    return out


def memory_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Not getrusage: its maximum survives exec, so a child
    would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def select_child(n: int, repeats: int) -> None:
    """Runs in its own process: times `select` on n rows and reports the process's peak RSS, as JSON."""
    from lift_local.phases.variety import VarietyParams, select

    embeddings = synthetic_embeddings(n)
    rss_before = memory_bytes("VmRSS")
    times = [timed(select, embeddings, VarietyParams()) for _ in range(repeats)]
    selection = select(embeddings, VarietyParams())
    print(json.dumps({"n": n, "wall": min(wall for wall, _ in times), "cpu": min(cpu for _, cpu in times),
                      "peak_rss": memory_bytes("VmHWM"), "rss_before": rss_before, "input_bytes": embeddings.nbytes,
                      "n_components": selection.n_components}))


def bench_selection(sizes: list[int], repeats: int, threads: int | None) -> str:
    results = []
    for n in sizes:
        command = [sys.executable, __file__, "--select-child", str(n), "--repeats", str(repeats)]
        if threads:
            command += ["--threads", str(threads)]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    base = results[0]
    gib = 2**30
    rows = [
        "| rows x 384 | rows / first | components | wall (s) | wall / first | CPU (s) | CPU / first "
        "| input (GiB) | peak RSS (GiB) | peak RSS above input (GiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['n']:,} | {r['n'] / base['n']:.0f} | {r['n_components']} | {r['wall']:.2f} "
            f"| {r['wall'] / base['wall']:.2f} | {r['cpu']:.2f} | {r['cpu'] / base['cpu']:.2f} "
            f"| {r['input_bytes'] / gib:.2f} | {r['peak_rss'] / gib:.2f} | {(r['peak_rss'] - r['rss_before']) / gib:.2f} |"
        )
    rows += ["", f"Times are the best of {repeats} runs; each size runs in a fresh process."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300, help="texts embedded per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=8, help="pairs of embedding runs (bare, lift-local)")
    parser.add_argument("--repeats", type=int, default=3, help="selection runs per size; the best is reported")
    parser.add_argument("--sizes", default="100000,200000,400000,1000000", help="selection sizes, comma-separated")
    parser.add_argument("--threads", type=int, help="limit torch and BLAS to this many threads")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--select-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    with threadpool_limits(args.threads):  # None: no limit
        if args.select_child:
            select_child(args.select_child, args.repeats)
            return
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`\n")
        print(f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} using {torch.get_num_threads()} threads; "
              f"load average {os.getloadavg()[0]:.1f} at start.\n")
        if not args.skip_embedding:
            print(f"## Embedding throughput ({args.records} records, batch size {args.batch_size}, "
                  f"{args.pairs} pairs of runs)\n")
            print(bench_embedding(embedding_texts(args.records), args.batch_size, args.pairs), "\n", flush=True)
        print("## Selection time and memory (synthetic embeddings, default parameters)\n")
        print(bench_selection([int(s) for s in args.sizes.split(",")], args.repeats, args.threads))
        print(f"\nLoad average {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
