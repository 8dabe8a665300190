"""The benchmarks `lift-local ab` evaluates on, from the test sets bundled whole in
`lift_local/data/benchmarks/` (see its README; `decontaminate` reads the same files), as lm-eval task
definitions built in code: their data is the bundled items, never the Hub.

Every item is asked as a fine-tuned chat model is asked: the question is the user's turn under the model's
chat template (lm-eval's `apply_chat_template`), and the answer is the assistant's turn.
- Multiple choice (ARC-Easy, ARC-Challenge, MMLU, TruthfulQA MC1) by log-likelihood: each choice's text is
  scored as the assistant's answer and the most likely one is the model's. This is the cloze formulation
  that small models can be measured with (OLMES, Gu et al. 2024: models under about 1B parameters are at
  chance when they must name a letter); ARC and MMLU choices are compared per character of their text
  (lm-eval's `acc_norm`), as OLMES does, so that a long answer is not penalised for its length. TruthfulQA
  MC1 is its best answer against its incorrect ones (lm-eval's `acc`, as its truthfulqa_mc1), zero-shot.
- GSM8K: the model's answer is right when its last number equals the reference's final number (lm-eval's
  "flexible-extract" for a chat model that writes prose).
- HumanEval and MBPP (its test split, task ids 11-510): pass@1 of one greedy answer, its program and the
  benchmark's tests run in `sandbox` (a child process with a time and memory limit and no network).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import sandbox

BUNDLE = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
CODE_TIMEOUT = 10.0  # seconds a benchmark's tests may run (HumanEval's own harness allows 3 per problem)
CODE_MEMORY = 1 << 30  # bytes of address space a program may use
CPU_LIMIT = 200  # items of each benchmark evaluated by default on a CPU (MMLU alone has 14,042: hours a model)


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # for tables and sentences
    file: str  # its file in the bundle, without .jsonl.gz
    generates: bool  # answers are generated (slow on a CPU: opt-in there, default on a GPU)
    kind: str = "accuracy"
    test_split: Callable[[dict], bool] | None = None  # which bundled items are its test set; None: all


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("arc_easy", "ARC-Easy", "arc_easy", generates=False),
    Benchmark("arc_challenge", "ARC-Challenge", "arc_challenge", generates=False),
    Benchmark("mmlu", "MMLU", "mmlu", generates=False),
    Benchmark("truthfulqa_mc", "TruthfulQA MC1", "truthfulqa", generates=False),
    Benchmark("gsm8k", "GSM8K", "gsm8k", generates=True),
    Benchmark("humaneval", "HumanEval", "humaneval", generates=True),
    Benchmark("mbpp", "MBPP", "mbpp", generates=True, test_split=lambda item: 11 <= item["task_id"] <= 510),
)}


def default_benchmarks(gpu: bool) -> list[str]:
    """All of them on a GPU; on a CPU the log-likelihood ones (generating answers there takes hours)."""
    return [name for name, benchmark in BENCHMARKS.items() if gpu or not benchmark.generates]


def check_benchmarks(names: Iterable[str]) -> None:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"unknown benchmark{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                          f"choose from {', '.join(BENCHMARKS)}")


@functools.cache
def items(name: str) -> dict[str, dict]:
    """The benchmark's test items by id, in the bundle's order."""
    benchmark = BENCHMARKS[name]
    with gzip.open(BUNDLE / f"{benchmark.file}.jsonl.gz", "rt", encoding="utf-8") as handle:
        found = (json.loads(line) for line in handle)
        test = benchmark.test_split or (lambda item: True)
        return {item["id"]: item for item in found if test(item)}


def sample_ids(name: str, limit: int | None, seed: int) -> list[str]:
    """`limit` items drawn at random with `seed` (the same for every model), in the bundle's order; all
    items when `limit` is None or not smaller."""
    ids = list(items(name))
    if limit is None or limit >= len(ids):
        return ids
    # A string seed is hashed with SHA-512, the same in every process (unlike hash()).
    chosen = set(random.Random(f"{seed}/{name}").sample(ids, limit))
    return [i for i in ids if i in chosen]


# --- prompts and answers ---------------------------------------------------------------------------------

def _truthfulqa_choices(item: dict) -> dict:
    return {**item, "choices": [item["best_answer"], *item["incorrect_answers"]], "answer": 0}


def _humaneval_prompt(item: dict) -> str:
    return f"Complete the following Python function.\n\n```python\n{item['text']}```"


def _mbpp_prompt(item: dict) -> str:
    # The MBPP paper's prompt: the task and the tests the code must pass.
    tests = "\n".join(item["test_list"])
    return f"{item['text']}\nYour code should pass these tests:\n\n{tests}"


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in a text, as a plain decimal ("$1,234.50." gives "1234.50"), or None."""
    found = _NUMBER.findall(text)
    return found[-1].replace("$", "").replace(",", "") if found else None


def gsm8k_right(answer: str, reference: str) -> bool:
    """The answer's last number equals the reference's final number (after its "####")."""
    said, gold = final_number(answer), final_number(reference.split("####")[-1])
    return said is not None and gold is not None and float(said) == float(gold)


_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(answer: str) -> str:
    """The code of a chat answer: its first fenced block, else the whole answer."""
    block = _FENCE.search(answer)
    return block.group(1) if block else answer


def humaneval_program(item: dict, answer: str) -> str:
    """The prompt, then the answer (a whole function, which replaces the prompt's stub, or the body the
    stub lacks), then the tests."""
    code = extract_code(answer)
    joiner = "\n" if re.search(rf"\bdef\s+{re.escape(item['entry_point'])}\s*\(", code) else ""
    return f"{item['text']}{joiner}{code}\n\n{item['test']}\n\ncheck({item['entry_point']})\n"


def mbpp_program(item: dict, answer: str) -> str:
    return f"{item['test_setup_code']}\n{extract_code(answer)}\n\n" + "\n".join(item["test_list"]) + "\n"


def _passes(program: Callable[[dict, str], str]) -> Callable[[dict, list[str]], dict[str, float]]:
    def score(doc: dict, results: list[str]) -> dict[str, float]:
        outcome = sandbox.run(program(doc, results[0]), timeout=CODE_TIMEOUT, memory=CODE_MEMORY)
        return {"acc": float(outcome.status == "passed")}

    return score


def _gsm8k_score(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": float(gsm8k_right(results[0], doc["answer"]))}


# --- lm-eval task definitions ----------------------------------------------------------------------------

def _metric(name: str, higher_is_better: bool = True) -> list[dict]:
    return [{"metric": name, "aggregation": "mean", "higher_is_better": higher_is_better}]


def _choices(metric: str) -> dict:
    return {"output_type": "multiple_choice", "doc_to_text": "text", "doc_to_choice": "choices",
            "doc_to_target": "answer", "metric_list": _metric(metric)}


def _generation(prompt: Callable[[dict], str] | str, score: Callable, max_tokens: int,
                unsafe: bool = False) -> dict:
    # `until` empty: generation stops at the model's end of turn (lm-eval adds the tokenizer's EOS).
    return {"output_type": "generate_until", "doc_to_text": prompt, "doc_to_target": "text",
            "generation_kwargs": {"until": [], "max_gen_toks": max_tokens, "do_sample": False},
            "process_results": score, "metric_list": _metric("acc"), "unsafe_code": unsafe}


# What lm-eval is asked, per benchmark; `metric` is the per-item value kept (1.0 right, 0.0 wrong).
_TASKS: dict[str, tuple[dict, str, Callable[[dict], dict] | None]] = {
    "arc_easy": (_choices("acc_norm"), "acc_norm", None),
    "arc_challenge": (_choices("acc_norm"), "acc_norm", None),
    "mmlu": (_choices("acc_norm"), "acc_norm", None),
    "truthfulqa_mc": (_choices("acc"), "acc", _truthfulqa_choices),
    "gsm8k": (_generation("text", _gsm8k_score, 384), "acc", None),
    "humaneval": (_generation(_humaneval_prompt, _passes(humaneval_program), 512, unsafe=True), "acc", None),
    "mbpp": (_generation(_mbpp_prompt, _passes(mbpp_program), 512, unsafe=True), "acc", None),
}


def task_config(name: str, ids: Sequence[str]) -> tuple[dict[str, Any], str]:
    """The lm-eval task definition of benchmark `name` over the items `ids`, and the metric per item."""
    config, metric, prepare = _TASKS[name]
    docs = [items(name)[i] for i in ids]
    if prepare is not None:
        docs = [prepare(doc) for doc in docs]
    task = {"task": f"lift_local_{name}", "custom_dataset": _dataset(docs), "test_split": "test", **config}
    return task, metric


def _dataset(docs: list[dict]) -> Callable[..., Any]:
    """lm-eval calls a task's `custom_dataset` for its splits (with the task's metadata as arguments)."""
    def load(**_: Any) -> dict:
        import datasets

        return {"test": datasets.Dataset.from_list(docs)}

    return load
