"""Evaluates one model (a base model, or a LoRA adapter over it) on the bundled benchmarks and on held-out
records, through lm-evaluation-harness, and gives a score per item so that arms can be compared item by item.

- lm-eval asks (task definitions in `benchmarks`); the chat template of the base model applies, as a
  fine-tuned chat model would be asked.
- Log-likelihoods are computed by lm-eval's HFLM, in the precision the arms are trained in (`device`), with
  its sequences packed so that work they share is done once (`score_packed`): on the default CPU benchmarks
  4x fewer tokens go through the model, at 3.3x less CPU time, with every item's score the same
  (docs/bench_ab_eval.md).
  Generation is HFLM's on a CPU and vLLM's with the LoRA adapter on a GPU.
- Every answer the model gives is kept in `work_dir` as it is computed (lm-eval's request cache, an SQLite
  file committed per request), so an interrupted evaluation redoes only what is missing, and a finished
  one loads nothing but the model.
- Held-out records: the mean negative log-likelihood per token of each record's reference answer (its
  `output`) given its instruction and input, the assistant's turn after the user's. lm-eval scores the
  newline that opens the assistant's turn with the answer (it moves the context's trailing whitespace into
  the continuation); the template makes that newline certain (−log p ≈ 0.0002 for SmolLM2), so the sum is
  divided by the answer's tokens alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import console
from ..exports import as_messages
from ..records import Record, atomic_path
from . import device
from .benchmarks import BENCHMARKS, check_benchmarks, sample_ids, task_config

HELDOUT = "heldout"
ROW_TOKENS = 1024  # tokens per packed forward pass (see `score_packed`)
GENERATION_BATCH = 16  # prompts per `generate` call
VLLM_MAX_LENGTH = 4096  # tokens of prompt and answer (vLLM's default, the model's maximum, can exceed memory)
_CACHE = "requests.db"
_IDENTITY = "model.json"


@dataclasses.dataclass(frozen=True)
class ItemScores:
    benchmark: str  # a BENCHMARKS name, or "heldout"
    kind: str  # "accuracy": 1.0/0.0 per item; "nll": mean per-token NLL per item (lower is better)
    ids: list[str]  # item ids, the same for every model given the same limit and seed
    values: list[float]


def evaluate(base: Path, adapter: Path | None, benchmarks: Sequence[str], *, limit: int | None, seed: int,
             heldout: Sequence[Record] | None, work_dir: Path, progress_label: str) -> dict[str, ItemScores]:
    """Scores per item of the model `base` (+ `adapter`) on `benchmarks` (a seeded sample of `limit` items of
    each) and on the `heldout` records, keyed by benchmark name and "heldout"."""
    check_benchmarks(benchmarks)
    if not benchmarks and not heldout:
        return {}
    _claim(work_dir, base, adapter)
    ids = {name: sample_ids(name, limit, seed) for name in benchmarks}
    gpu = device.gpu()
    on_vllm = [name for name in benchmarks if gpu and BENCHMARKS[name].generates]
    values: dict[str, list[float]] = {}
    with _lm_eval_logs():
        if heldout or len(on_vllm) < len(benchmarks):
            lm = _hf_model(base, adapter, progress_label, gpu)
            tasks = {name: task_config(name, ids[name]) for name in benchmarks if name not in on_vllm}
            if heldout:
                tasks[HELDOUT] = _heldout_config(heldout, lm)
            values |= _run(lm, tasks, work_dir)
            del lm
        if on_vllm:
            _free_gpu()
            values |= _run(_vllm_model(base, adapter, progress_label),
                           {name: task_config(name, ids[name]) for name in on_vllm}, work_dir)
    scores = {name: ItemScores(name, BENCHMARKS[name].kind, ids[name], values[name]) for name in benchmarks}
    if heldout:
        scores[HELDOUT] = ItemScores(HELDOUT, "nll", [record.id for record in heldout], values[HELDOUT])
    return scores


def _run(lm, tasks: dict[str, tuple[dict, str]], work_dir: Path) -> dict[str, list[float]]:
    """lm-eval's evaluate over the tasks ((definition, metric) by name), its request cache in `work_dir`;
    each task's metric per item, in the order of its items."""
    from lm_eval.api.model import CachingLM
    from lm_eval.evaluator import evaluate as lm_eval_evaluate
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_defaults=False).load([config for config, _ in tasks.values()])
    cached = CachingLM(lm, str(work_dir / _CACHE))
    try:
        results = lm_eval_evaluate(lm=cached, task_dict=loaded, log_samples=True, bootstrap_iters=0,
                                   apply_chat_template=True, fewshot_as_multiturn=False,
                                   confirm_run_unsafe_code=True)
    finally:
        cached.dbdict.close()
    values = {}
    for name, (config, metric) in tasks.items():
        samples = sorted(results["samples"][config["task"]], key=lambda sample: sample["doc_id"])
        values[name] = [float(sample[metric]) for sample in samples]
    return values


def _heldout_config(records: Sequence[Record], lm) -> tuple[dict[str, Any], str]:
    """An lm-eval task scoring each record's answer; its value per item the mean NLL per answer token."""
    docs = [{"text": as_messages(record)[0]["content"], "output": record.output,
             "tokens": len(lm.tok_encode(record.output, add_special_tokens=False))} for record in records]

    def nll(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
        return {"nll": -results[0][0] / max(1, doc["tokens"])}

    def load(**_: Any) -> dict:
        import datasets

        return {"test": datasets.Dataset.from_list(docs)}

    config = {"task": "lift_local_heldout", "custom_dataset": load, "test_split": "test",
              "output_type": "loglikelihood", "doc_to_text": "text", "doc_to_target": "output",
              "process_results": nll, "metric_list": [{"metric": "nll", "aggregation": "mean",
                                                        "higher_is_better": False}]}
    return config, "nll"


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _hf_model(base: Path, adapter: Path | None, label: str, gpu: bool):
    """The model in process, in `device.precision`; a LoRA adapter merged into its weights (the same function,
    at the base model's speed)."""
    lm = _packed_hflm()(pretrained=str(base), peft=str(adapter) if adapter else None,
                        device="cuda" if gpu else "cpu", dtype=device.precision(),
                        batch_size=GENERATION_BATCH)
    if adapter is not None:
        lm._model = lm._model.merge_and_unload()
    lm.label = label
    return lm


def _vllm_model(base: Path, adapter: Path | None, label: str):
    """vLLM generating with the LoRA adapter on a GPU (not merged: vLLM applies it per request)."""
    from lm_eval.models.vllm_causallms import VLLM

    class ProgressVLLM(VLLM):
        def generate_until(self, requests, disable_tqdm: bool = False):
            with _progress(self, len(requests), f"{label} answers"):
                return super().generate_until(requests, disable_tqdm=True)

    rank = json.loads((adapter / "adapter_config.json").read_text())["r"] if adapter else 16
    return ProgressVLLM(pretrained=str(base), lora_local_path=str(adapter) if adapter else None,
                        max_lora_rank=rank, max_model_len=VLLM_MAX_LENGTH, dtype=device.precision())


@functools.cache
def _packed_hflm():
    """lm-eval's HFLM (imported only when a model is evaluated), whose log-likelihoods share work (see
    `score_packed`); generation is HFLM's own."""
    from lm_eval.models.huggingface import HFLM

    class PackedHFLM(HFLM):
        label = ""

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            with _progress(self, len(requests), f"{self.label} log-likelihoods"):
                return super().loglikelihood(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            with _progress(self, len(requests), f"{self.label} answers"):
                return super().generate_until(requests, disable_tqdm=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            results: list[tuple[float, bool] | None] = [None] * len(requests)
            fits = [n for n, (_, context, continuation) in enumerate(requests)
                    if len(context) + len(continuation) <= self.max_length]
            overlong = sorted(set(range(len(requests))) - set(fits))  # HFLM truncates them from the left
            if overlong:
                for number, answer in zip(overlong, super()._loglikelihood_tokens(
                        [requests[n] for n in overlong], disable_tqdm=True), strict=True):
                    results[number] = answer
            for number, answer in score_packed(self, [requests[n] for n in fits], ROW_TOKENS):
                results[fits[number]] = answer
            return results

    return PackedHFLM


def score_packed(lm, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                 row_tokens: int) -> Iterator[tuple[int, tuple[float, bool]]]:
    """(request number, (log-likelihood, greedy)) of HFLM's tokenized requests (context, continuation), each
    as soon as it is computed, with the work they share done once.

    HFLM runs every (context, continuation) pair as a sequence of its own: the context is recomputed for
    each choice of a question, the chat template's system prompt for every request, and the vocabulary's
    logits at every position. Here many requests share one sequence (one row of about `row_tokens` tokens
    per forward pass): the prefix all contexts share, then each distinct context once, each followed by
    its continuations, their last token left out (nothing is predicted from it). A 4D attention mask lets
    each continuation see only the shared prefix, its context and itself, and position ids restart after
    the context for every continuation, so each token sees what it would see in a sequence of its own
    (the same numbers up to float rounding). Logits are computed only where a continuation token is
    predicted."""
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for number, (_, context, _) in enumerate(requests):
        groups.setdefault(tuple(context), []).append(number)
    if not groups:
        return
    # Every context keeps at least its last token of its own, whose logits predict its continuations.
    shared = os.path.commonprefix(list(groups))[:min(map(len, groups)) - 1]
    units = sorted(((context[len(shared):], numbers) for context, numbers in groups.items()),
                   key=lambda unit: -_unit_tokens(unit, requests))
    rows: list[list[tuple[tuple[int, ...], list[int]]]] = [[]]
    used = 0
    for unit in units:
        size = _unit_tokens(unit, requests)
        if rows[-1] and len(shared) + used + size > row_tokens:
            rows.append([])
            used = 0
        rows[-1].append(unit)
        used += size
    for row in rows:
        tokens, positions, mask, wanted = _layout(shared, row, requests)
        keep = sorted({p for _, at in wanted for p in at})
        where = {p: i for i, p in enumerate(keep)}
        bias = torch.zeros(mask.shape, dtype=lm.model.dtype)
        bias.masked_fill_(torch.from_numpy(~mask), torch.finfo(bias.dtype).min)
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([tokens], device=lm.device),
                              position_ids=torch.tensor([positions], device=lm.device),
                              attention_mask=bias[None, None].to(lm.device), use_cache=False,
                              logits_to_keep=torch.tensor(keep, device=lm.device)).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        for number, at in wanted:
            index = torch.tensor([where[p] for p in at], device=lm.device)
            target = torch.tensor(requests[number][2], device=lm.device)
            answer = (float(logprobs[index, target].sum()), bool((greedy[index] == target).all()))
            lm.cache_hook.add_partial("loglikelihood", requests[number][0], answer)
            yield number, answer


def _unit_tokens(unit: tuple[tuple[int, ...], list[int]], requests) -> int:
    own, numbers = unit
    return len(own) + sum(len(requests[n][2]) - 1 for n in numbers)


def _layout(shared: Sequence[int], row, requests):
    """One packed sequence: its tokens, position ids, attention mask (True: may attend) and, per request,
    the positions whose logits predict its continuation's tokens."""
    import numpy as np

    size = len(shared) + sum(_unit_tokens(unit, requests) for unit in row)
    mask = np.zeros((size, size), dtype=bool)
    tokens, positions, wanted = list(shared), list(range(len(shared))), []

    def add(ids: Sequence[int], first_position: int, sees: list[tuple[int, int]]) -> tuple[int, int]:
        start, end = len(tokens), len(tokens) + len(ids)
        tokens.extend(ids)
        positions.extend(range(first_position, first_position + len(ids)))
        for low, high in sees:
            mask[start:end, low:high] = True
        mask[start:end, start:end] = np.tril(np.ones((end - start, end - start), dtype=bool))
        return start, end

    mask[:len(shared), :len(shared)] = np.tril(np.ones((len(shared), len(shared)), dtype=bool))
    for own, numbers in row:
        context = add(own, len(shared), [(0, len(shared))])
        after = len(shared) + len(own)
        for number in numbers:
            start, end = add(requests[number][2][:-1], after, [(0, len(shared)), context])
            wanted.append((number, [context[1] - 1, *range(start, end)]))
    return tokens, positions, mask, wanted


@contextlib.contextmanager
def _progress(lm, total: int, label: str) -> Iterator[None]:
    """A bar with rate and time left on lift-local's stderr, moved on by each answer the model stores."""
    hook = lm.cache_hook
    with console.Progress(total, label, "request") as bar:
        lm.cache_hook = _Ticking(hook, bar)
        try:
            yield
        finally:
            lm.cache_hook = hook


class _Ticking:
    """lm-eval's cache hook (each answer into the request cache) that also moves a progress bar."""

    def __init__(self, hook, bar) -> None:
        self.hook, self.bar = hook, bar

    def add_partial(self, attr: str, request, result) -> None:
        self.hook.add_partial(attr, request, result)
        self.bar.update(1)


def _claim(work_dir: Path, base: Path, adapter: Path | None) -> None:
    """`work_dir` keeps one model's answers: those of another model (a retrained adapter, other weights at
    the same path, another precision) are removed, not reused."""
    identity = {"base": _fingerprint(base, path=True), "adapter": _fingerprint(adapter, path=False),
                "precision": device.precision()}
    marker = work_dir / _IDENTITY
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) != identity:
        (work_dir / _CACHE).unlink(missing_ok=True)
        marker.unlink()
    work_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(identity, indent=1) + "\n", encoding="utf-8")


def _fingerprint(folder: Path | None, path: bool) -> str | None:
    """A model folder's files: a base model by its path and its files' names, sizes and times (up to many
    GB), an adapter by its files' bytes (a few MB; the same adapter anywhere)."""
    if folder is None:
        return None
    digest = hashlib.sha256(str(folder.resolve()).encode() if path else b"")
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(file.name.encode())
        stat = file.stat()
        digest.update(f"{stat.st_size}/{stat.st_mtime_ns}".encode() if path else file.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def _lm_eval_logs() -> Iterator[None]:
    """lm-eval's INFO lines to stderr, which is the log file while a command runs (`console.logs_to`)."""
    logger = logging.getLogger("lm_eval")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
