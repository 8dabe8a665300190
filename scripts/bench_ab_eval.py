"""Benchmark of one model's evaluation in `lift-local ab` on a CPU; writes a Markdown report
(docs/bench_ab_eval.md: the last one).

All sides evaluate the packaged SmolLM2-135M-Instruct (the student role's default) in float32 with lm-eval
on the default CPU benchmarks (ARC-Easy, ARC-Challenge, MMLU, TruthfulQA MC1), from an empty work folder,
each in a fresh process, model loading included (what one arm's evaluation adds to `lift-local ab`):

- lift-local: `ab.evaluate.evaluate` at `--limit` items per benchmark (seed 0), log-likelihoods packed
  (`evaluate.score_packed`: shared prefixes computed once, logits only where a token is predicted).
- baseline: the same evaluation with lm-eval's own HFLM log-likelihoods (one right-padded sequence per
  (context, choice), batches of 16, logits at every position), on `--baseline-limit` items per benchmark,
  against lift-local on the same items: the speed ratio, and whether every item's score agrees.
- rows: lift-local with packed rows of 256 to 2048 tokens on those items (`ROW_TOKENS`).
- threads: lift-local on those items with one torch thread (on a busy machine a second thread waits for
  its core at every synchronisation, hundreds per forward pass).
- held-out: the mean NLL of `--heldout` Code Alpaca records' answers (`heldout=`, no benchmark).

    .venv/bin/python scripts/bench_ab_eval.py [--limit 200] [--baseline-limit 20] [--heldout 100] \
        [--threads 2] [--out docs/bench_ab_eval.md]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
MODEL = "smollm2-135m-instruct"
ROWS = (256, 512, 1024, 2048)


def measure(side: str, limit: int, heldout: int, threads: int, row_tokens: int | None = None) -> dict:
    """One evaluation in this (fresh) process: wall and CPU seconds, tokens through the model, scores."""
    import torch

    from lift_local import models
    from lift_local.ab import evaluate as evaluation
    from lift_local.ab.benchmarks import default_benchmarks
    from lift_local.records import read_records

    torch.set_num_threads(threads)
    counted = {"requests": 0, "tokens": 0, "forwards": 0}
    packed_class = evaluation._packed_hflm()
    if side == "baseline":
        hflm = packed_class.__mro__[1]

        def plain(self, requests, disable_tqdm=False, override_bs=None):
            counted["requests"] += len(requests)
            counted["tokens"] += sum(len(context) + len(continuation) - 1 for _, context, continuation in requests)
            counted["forwards"] += -(-len(requests) // self.batch_size)
            return hflm._loglikelihood_tokens(self, requests, disable_tqdm=True)

        packed_class._loglikelihood_tokens = plain
    else:
        real, layout = evaluation.score_packed, evaluation._layout

        def score(lm, requests, row_tokens):
            counted["requests"] += len(requests)
            yield from real(lm, requests, row_tokens)

        def counting_layout(shared, row, requests):
            found = layout(shared, row, requests)
            counted["tokens"] += len(found[0])
            counted["forwards"] += 1
            return found

        evaluation.score_packed, evaluation._layout = score, counting_layout
        if row_tokens:
            evaluation.ROW_TOKENS = row_tokens
    base = models.ensure_present(models.resolve("judge", MODEL))
    records = read_records(CODE_ALPACA)[-heldout:] if heldout else None
    names = [] if heldout else default_benchmarks(gpu=False)
    with tempfile.TemporaryDirectory() as work:
        wall, cpu = time.perf_counter(), time.process_time()
        scores = evaluation.evaluate(base, None, names, limit=limit, seed=0, heldout=records,
                                     work_dir=Path(work), progress_label=side)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"side": side, "wall": wall, "cpu": cpu, "load": os.getloadavg(), **counted,
            "scores": {name: s.values for name, s in scores.items()}}


def fresh(*args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def describe() -> list[str]:
    import lm_eval
    import torch
    import transformers

    return [f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M} (machine's local time)",
            f"- Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), shared with other "
            f"work; load average at the start {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min)",
            f"- Versions: lm-eval {lm_eval.__version__}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, Python {platform.python_version()}"]


def rate(result: dict) -> str:
    return f"{result['tokens'] / result['wall']:.0f}"


def row(label: str, result: dict, against: dict | None = None) -> str:
    ratio = f"{against['wall'] / result['wall']:.2f}" if against else ""
    load = f"{result['load'][0]:.1f}"
    return (f"| {label} | {result['requests']} | {result['tokens']} | {result['forwards']} | {result['wall']:.0f} | "
            f"{result['cpu']:.0f} | {rate(result)} | {load} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--baseline-limit", type=int, default=20)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_ab_eval.md")
    args = parser.parse_args()
    header = describe()
    small = {"lift-local": fresh("lift-local", args.baseline_limit, 0, args.threads),
             "baseline": fresh("baseline", args.baseline_limit, 0, args.threads)}
    print(f"baseline sample: {small['lift-local']['wall']:.0f} s vs {small['baseline']['wall']:.0f} s", flush=True)
    rows = {size: fresh("lift-local", args.baseline_limit, 0, args.threads, size) for size in ROWS}
    print("rows:", {size: round(r["wall"]) for size, r in rows.items()}, flush=True)
    single = fresh("lift-local", args.baseline_limit, 0, 1)
    print(f"one thread: {single['wall']:.0f} s", flush=True)
    full = fresh("lift-local", args.limit, 0, args.threads)
    print(f"--limit {args.limit}: {full['wall']:.0f} s", flush=True)
    held = fresh("lift-local", None, args.heldout, args.threads)
    print(f"held-out: {held['wall']:.0f} s", flush=True)

    agree = sum(a == b for name in small["baseline"]["scores"]
                for a, b in zip(small["baseline"]["scores"][name], small["lift-local"]["scores"][name], strict=True))
    total = sum(len(v) for v in small["baseline"]["scores"].values())
    columns = ("| side | requests | tokens through the model (no padding) | forward passes | wall s | CPU s | tokens/s | "
               "load (1 min) at the end | baseline / side |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    accuracy = {name: sum(v) / len(v) for name, v in full["scores"].items()}
    nll = held["scores"]["heldout"]
    lines = [
        "# Evaluation of one model in `lift-local ab` (CPU)", "",
        "Written by `scripts/bench_ab_eval.py`; its docstring says what each side does.", "",
        *header,
        f"- Model: the packaged `{MODEL}`, float32, {args.threads} torch thread(s); seed 0",
        f"- Command (from the repository root): `.venv/bin/python scripts/bench_ab_eval.py "
        f"{shlex.join(sys.argv[1:])}`", "",
        f"## lift-local against lm-eval's own log-likelihoods ({args.baseline_limit} items per benchmark)", "",
        columns,
        row("lift-local (packed rows of 1024 tokens)", small["lift-local"], small["baseline"]),
        row("lm-eval HFLM, batches of 16", small["baseline"], small["baseline"]), "",
        f"Every item's score agrees: {agree} of {total}.", "",
        "## Packed row size (same items)", "", columns,
        *(row(f"rows of {size} tokens", result, small["baseline"]) for size, result in rows.items()), "",
        "## Torch threads (same items)", "", columns,
        row(f"{args.threads} thread(s)", small["lift-local"], small["baseline"]),
        row("1 thread", single, small["baseline"]), "",
        f"## The default CPU benchmark set, --limit {args.limit}", "", columns,
        row(f"lift-local, 4 benchmarks x {args.limit} items", full), "",
        "Accuracy (the base model): " + ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items()), "",
        f"## Held-out NLL, {args.heldout} Code Alpaca records", "", columns,
        row(f"lift-local, {args.heldout} records", held), "",
        f"{args.heldout / held['wall']:.2f} records/s including model loading; mean NLL "
        f"{sum(nll) / len(nll):.3f} nats per answer token.", "",
        "## Interpretation", "",
        f"- For the same requests lift-local puts {small['baseline']['tokens'] / small['lift-local']['tokens']:.1f}x "
        f"fewer tokens through the model than lm-eval's HFLM and uses "
        f"{small['baseline']['cpu'] / small['lift-local']['cpu']:.1f}x less CPU time; every item's score agrees. "
        "Wall times on a machine shared with other work vary several-fold between runs of the same side "
        "(compare the rows of 1024 tokens with the first table's lift-local run): compare CPU seconds.",
        f"- One model on the default CPU set at --limit {args.limit}: {full['tokens']} tokens in "
        f"{full['forwards']} forward passes, {full['wall'] / 60:.1f} min here, {full['cpu'] / 60:.1f} CPU-minutes "
        "(a waiting thread's spinning counts as CPU time too).", "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
