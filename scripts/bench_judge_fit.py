"""Measures fitted judges (`lift-local judge-fit`) against GPT-4 by grouped cross-validation: each feature set
alone and together, each packaged model as the frozen reader, beside each packaged judge raw, a jury of them
and the length alone; and what each feature costs per 100 records. Writes docs/judges_fit.md and
docs/judges/fit.png.

Every number is judge-fit's own machinery (`lift_local.judge`): the judges judge through the quality phase
(its reply cache), the hidden states and embeddings come from `features`, the folds are `fit.splits` grouped
by question, and each score is compared with GPT-4 as judge-eval does (Spearman with its 95% bootstrap
interval). Each fitted score is the mean over `--seeds` shuffles of the folds (their spread is printed too).
Times per 100 records are measured on a fresh cache of `--time-records` records.

    .venv/bin/python scripts/bench_judge_fit.py [--judges smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
        [--readers smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import load, machine

ROOT = Path(__file__).resolve().parents[1]


def judged(records, name: str, cache: Path):
    """Each record's verdicts by judge `name`, through the quality phase and its reply cache."""
    from lift_local.judge.fit import verdicts_in_order
    from lift_local.phases import Local
    from lift_local.phases.quality import SCORES, Quality, QualityParams
    from lift_local.workbench import ModelsConfig, Workbench

    with Workbench(cache, ModelsConfig(roles={"judge": (name,)})) as bench:
        outcome = Quality(QualityParams(top=len(records))).run(records, Local(bench))
    return verdicts_in_order(records, outcome.side[SCORES])


def features(records, spec, cache: Path) -> np.ndarray:
    """`spec`'s features (no judge) of `records`, through their cache."""
    from lift_local.judge.features import feature_matrix
    from lift_local.workbench import ModelsConfig, Workbench

    config = ModelsConfig(roles={"embedder": (spec.embedder,)} if spec.embedder else {})
    with Workbench(cache, config) as bench:
        return feature_matrix(records, [[]] * len(records), spec, bench)[0]


def per_100(compute, sample) -> float:
    """Seconds per 100 records of `compute(cache, records)` on a fresh cache: the first two records start the
    engine or load the model, which is not the rate, so the rest are timed."""
    with tempfile.TemporaryDirectory() as fresh:
        compute(Path(fresh), sample[:2])
        started = time.perf_counter()
        compute(Path(fresh), sample[2:])
        return 100 * (time.perf_counter() - started) / (len(sample) - 2)


def cross_validated(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seeds: list[int]) -> list[np.ndarray]:
    from lift_local.judge.fit import out_of_fold

    usable = ~np.isnan(X).any(axis=1)
    runs = []
    for seed in seeds:
        predicted = np.full(len(y), np.nan)
        predicted[usable] = out_of_fold(X[usable], y[usable], groups[usable], folds, seed)
        runs.append(predicted)
    return runs


def agreement(scores: np.ndarray, reference: np.ndarray) -> tuple[float, tuple[float, float], int]:
    """Spearman with its 95% bootstrap interval, on the records with a score, as judge-eval computes it."""
    from lift_local.judge.agreement import ScoreTable, compare

    ids = [str(i) for i, s in enumerate(scores) if not np.isnan(s)]
    a = ScoreTable("a", "a", {i: float(scores[int(i)]) for i in ids}, {}, frozenset())
    b = ScoreTable("b", "b", {i: float(reference[int(i)]) for i in ids}, {}, frozenset())
    overall = compare(a, b, top=0.5, bins=10).overall
    return overall.spearman, overall.intervals["spearman"], overall.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "data" / "mt_bench_gpt4.jsonl")
    parser.add_argument("--judges", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--readers", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--time-records", type=int, default=42, help="Records timed on a fresh cache.")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench-judge-fit")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "judges_fit.md")
    args = parser.parse_args()

    from lift_local import figures, models
    from lift_local.judge.evaluate import reference_table
    from lift_local.judge.features import FeatureSpec, HiddenSpec, judge_features, reader_dtype
    from lift_local.judge.fit import FitParams, Sample
    from lift_local.judge.protocol import jury_totals, length_score, record_length
    from lift_local.records import read_records

    started, loads = datetime.datetime.now(), {"start": load()}
    records = read_records(args.reference)
    reference = reference_table(str(args.reference), records, "gpt4_score", 10)
    params = FitParams(folds=args.folds)
    sample = Sample.of(args.reference, records, reference, 10, params.folds)
    gpt4 = sample.y * 10  # on 0-100
    seeds = [int(seed) for seed in args.seeds.split(",")]
    costs: dict[str, float] = {}
    rows: list[tuple[str, float, tuple[float, float], float, int]] = []  # name, spearman, interval, sd, n

    def fitted(name: str, X: np.ndarray) -> np.ndarray:
        runs = cross_validated(X, sample.y, sample.groups, params.folds, seeds)
        values = [agreement(run, gpt4) for run in runs]
        spearman, interval, n = values[0]
        rows.append((name, float(np.mean([v[0] for v in values])), interval, float(np.std([v[0] for v in values])), n))
        print(f"{name}: {rows[-1][1]:.3f} (sd {rows[-1][3]:.3f}) {interval}", flush=True)
        return runs[0]

    def raw(name: str, scores: np.ndarray) -> None:
        spearman, interval, n = agreement(scores, gpt4)
        rows.append((name, spearman, interval, 0.0, n))
        print(f"{name}: {spearman:.3f} {interval}", flush=True)

    lengths = [record_length(r) for r in records]
    threshold = float(np.percentile(lengths, 98))
    raw("baseline: length score alone", np.array([length_score(n, threshold) for n in lengths]))
    raw("baseline: random score", np.random.default_rng(0).uniform(0, 100, len(records)))
    timed = records[:args.time_records]
    length = features(records, FeatureSpec(length=True), args.cache)
    costs["length"] = per_100(lambda cache, part: features(part, FeatureSpec(length=True), cache), timed)
    fitted("fitted: length", length)

    judge_columns, judge_totals = {}, {}
    for name in args.judges.split(","):
        models.prepare(models.load_registry(), name, quiet=True)
        verdicts = judged(records, name, args.cache)
        costs[f"judge {name} (generation)"] = per_100(lambda cache, part, name=name: judged(part, name, cache), timed)
        judge_columns[name] = judge_features(verdicts)
        judge_totals[name] = np.array([v[0].expected_total if v[0].ok else np.nan for v in verdicts])
        raw(f"raw judge {name}: expected total", judge_totals[name])
        fitted(f"fitted: judge {name}", judge_columns[name])
        fitted(f"fitted: judge {name} + length", np.hstack([judge_columns[name], length]))
    if len(judge_totals) > 1:
        totals = np.column_stack(list(judge_totals.values()))
        every = ~np.isnan(totals).any(axis=1)
        jury = np.full(len(records), np.nan)
        jury[every] = jury_totals(totals[every])
        raw(f"jury ({' + '.join(judge_totals)}): total", jury)

    first_judge = next(iter(judge_columns.values()), None)
    for name in args.readers.split(","):
        models.prepare(models.load_registry(), name, quiet=True)
        folder = models.ensure_present(models.resolve("reader", name))
        layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
        spec = FeatureSpec(hidden=HiddenSpec(name, layers // 2, params.pooling, params.max_tokens))
        hidden = features(records, spec, args.cache)
        costs[f"hidden states {name} (layer {layers // 2} of {layers})"] = per_100(
            lambda cache, part, spec=spec: features(part, spec, cache), timed)
        fitted(f"fitted: hidden {name}", hidden)
        fitted(f"fitted: hidden {name} + length", np.hstack([hidden, length]))
        if first_judge is not None:
            fitted(f"fitted: judge + length + hidden {name}", np.hstack([first_judge, length, hidden]))

    embedder = models.resolve("embedder").name
    spec = FeatureSpec(embedder=embedder)
    vectors = features(records, spec, args.cache)
    costs[f"embedder {embedder}"] = per_100(lambda cache, part: features(part, spec, cache), timed)
    fitted("fitted: embedder", vectors)
    fitted("fitted: embedder + length", np.hstack([vectors, length]))
    loads["end"] = load()

    rows.sort(key=lambda row: -row[1])
    figure, (ax,) = figures.new_figure(12, 0.32 * len(rows) + 1.2)
    colours = [figures.GREY if name.startswith(("baseline", "raw", "jury")) else figures.BLUE for name, *_ in rows]
    figures.interval_bars(ax, [row[0] for row in rows], [row[1] for row in rows], [row[2][0] for row in rows],
                          [row[2][1] for row in rows], colours)
    ax.axvline(0.5, color=figures.MARK, linestyle="--", label="the goal: 0.5 on unseen questions")
    ax.set_xlabel(f"Spearman with GPT-4 ({len(records)} answers; fitted: out-of-fold, grouped by question)")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    plot = ROOT / "docs" / "judges" / "fit.png"
    figure.savefig(plot, dpi=110)

    command = "`.venv/bin/python scripts/bench_judge_fit.py" + (f" --judges {args.judges}" if args.judges else "") + \
        f" --readers {args.readers} --seeds {args.seeds}`"
    lines = [
        "# Fitted judges against GPT-4",
        "",
        f"Measured {started:%Y-%m-%d} by {command} on {machine()} (load average {loads['start']} at the start, "
        f"{loads['end']} at the end). {len(records)} answers to {len(np.unique(sample.groups))} MT-bench questions "
        f"(`{args.reference.name}`), GPT-4's 1-10 score as the reference. A fitted score is out-of-fold: "
        f"{params.folds}-fold cross-validation grouped by question, so no question is both fitted and scored; "
        f"its Spearman is the mean over {len(seeds)} shuffles of the folds (sd beside it), the interval the "
        "95% bootstrap interval of the first shuffle. Raw scores and baselines are not fitted.",
        "",
        "| score | Spearman | 95% interval | sd over shuffles | n |",
        "| --- | ---: | --- | ---: | ---: |",
        *(f"| {name} | {value:.2f} | [{low:.2f}, {high:.2f}] | {sd:.3f} | {n} |" for name, value, (low, high), sd, n in rows),
        "",
        "![Spearman with GPT-4, fitted and raw, with 95% intervals](judges/fit.png)",
        "",
        "## What each feature costs",
        "",
        f"Seconds per 100 records on this machine, each timed on {args.time_records - 2} records with a fresh cache "
        "after two that start the engine or load the model (judges: generation through vLLM; hidden states: one "
        f"forward pass a record through vLLM's pooling runner, the readers in {reader_dtype('cpu')}; embeddings: "
        "one forward pass a record, batched):",
        "",
        "| feature | s / 100 records |",
        "| --- | ---: |",
        *(f"| {name} | {cost:.1f} |" for name, cost in costs.items()),
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
