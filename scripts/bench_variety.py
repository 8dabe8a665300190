"""Benchmark of the variety phase; prints a Markdown report (docs/bench_variety.md holds the last one).

1. Embedding throughput: lift-local's cached `Embedder` (empty cache) against a bare
   `SentenceTransformer.encode` call on the same texts with the same batch size, in alternating order,
   both with the model already loaded. The ratio of the two is the number that matters.
2. Selection (`variety.select`) on synthetic 384-dimensional embeddings of growing size, each size in a
   fresh process so that its peak RSS is its own. Times are given relative to the smallest size.

    .venv/bin/python scripts/bench_variety.py [--records 1000] [--repeats 3] [--sizes 100000,200000,400000,1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data")
DIMENSION = 384


def embedding_texts(count: int) -> list[str]:
    """Half Code Alpaca, half Dolly: short code answers and long prose, as a real mix would be."""
    from lift_local.records import embedding_text, read_records

    half = count // 2
    records = read_records(DATA / "code_alpaca_2k.json")[:half] + read_records(DATA / "dolly_3k.json")[: count - half]
    return [embedding_text(record) for record in records]


def bench_embedding(texts: list[str], batch_size: int, repeats: int) -> str:
    from lift_local import models
    from lift_local.embed import Embedder
    from lift_local.store import Store

    folder = models.ensure_present(models.resolve("embedder"))
    with tempfile.TemporaryDirectory() as tmp:
        embedder = Embedder(folder, batch_size=batch_size)
        model = embedder.model  # load once, outside every timing; both sides share the same model object
        model.encode(texts, batch_size=batch_size)  # warm-up: torch prepares kernels per input shape once

        def bare(run: int) -> None:
            model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

        def lift(run: int) -> None:
            embedder.store = Store(Path(tmp) / f"empty{run}.sqlite", "embeddings")
            embedder.embed(texts)

        times: dict[str, list[tuple[float, float]]] = {"bare": [], "lift": []}
        for run in range(repeats):  # alternate which side goes first: load drift hits both sides alike
            for side in ("bare", "lift") if run % 2 == 0 else ("lift", "bare"):
                times[side].append(timed(bare if side == "bare" else lift, run))
        cached = timed(embedder.embed, texts)  # the last store is full: a re-run

    rows = [
        "| | median texts/s (wall) | median texts/s (CPU) | each run, wall / CPU seconds |",
        "|---|---:|---:|---|",
    ]
    rate = {}
    for side, label in (("bare", "bare `SentenceTransformer.encode`"), ("lift", "lift-local `Embedder.embed`, empty cache")):
        wall, cpu = (statistics.median(column) for column in zip(*times[side]))
        rate[side] = (len(texts) / wall, len(texts) / cpu)
        runs = ", ".join(f"{w:.1f} / {c:.1f}" for w, c in times[side])
        rows.append(f"| {label} | {rate[side][0]:.1f} | {rate[side][1]:.1f} | {runs} |")
    rows.append(f"| lift-local `Embedder.embed`, all cached | {len(texts) / cached[0]:,.0f} | | {cached[0]:.3f} |")
    pairs = ", ".join(f"{b[0] / l[0]:.3f}" for b, l in zip(times["bare"], times["lift"]))
    rows += [
        "",
        f"**Throughput ratio lift-local / bare: {rate['lift'][0] / rate['bare'][0]:.3f} by wall time, "
        f"{rate['lift'][1] / rate['bare'][1]:.3f} by CPU time** (ratios of medians; goal >= 0.95). "
        f"Per pair, by wall time: {pairs}.",
    ]
    return "\n".join(rows)


def timed(function, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of one call. CPU time is the process's, all threads: it is less disturbed than
    wall time when other programs share the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


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
    from lift_local.variety import VarietyParams, select

    embeddings = synthetic_embeddings(n)
    rss_before = memory_bytes("VmRSS")
    times = [timed(select, embeddings, VarietyParams()) for _ in range(repeats)]
    selection = select(embeddings, VarietyParams())
    print(json.dumps({"n": n, "wall": min(wall for wall, _ in times), "cpu": min(cpu for _, cpu in times),
                      "peak_rss": memory_bytes("VmHWM"), "rss_before": rss_before, "input_bytes": embeddings.nbytes,
                      "n_components": selection.n_components}))


def bench_selection(sizes: list[int], repeats: int) -> str:
    results = []
    for n in sizes:
        child = subprocess.run([sys.executable, __file__, "--select-child", str(n), "--repeats", str(repeats)],
                               check=True, capture_output=True, text=True)
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
    parser.add_argument("--records", type=int, default=1000, help="texts embedded per run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="100000,200000,400000,1000000", help="selection sizes, comma-separated")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--select-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.select_child:
        select_child(args.select_child, args.repeats)
        return

    import os

    import torch

    print(f"Machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average before start {os.getloadavg()[0]:.1f}.\n")
    if not args.skip_embedding:
        print(f"## Embedding throughput ({args.records} records, batch size {args.batch_size}, "
              f"{args.repeats} alternating runs per side)\n")
        print(bench_embedding(embedding_texts(args.records), args.batch_size, args.repeats), "\n", flush=True)
    print("## Selection time and memory (synthetic embeddings, default parameters)\n")
    print(bench_selection([int(s) for s in args.sizes.split(",")], args.repeats))


if __name__ == "__main__":
    main()
