"""Writes lift_local/data/benchmarks/*.jsonl.gz, the benchmark test sets lift-local ships, from the project's
shared copies (../shared/data/benchmarks, see its README for origins and licences).

Items are kept whole, so that one copy serves both readers: `decontaminate` matches the question (`id`,
`text`; HumanEval's prompt is its signature and docstring) and `lift-local ab` evaluates with the rest
(choices and answer, a solution and its tests). Run it again only when the shared copies change:

    python scripts/bundle_benchmarks.py [--source ../shared/data/benchmarks]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "lift_local" / "data" / "benchmarks"


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from (json.loads(line) for line in handle if line.strip())


def humaneval(source: Path) -> Iterator[dict]:
    for item in _jsonl(source / "humaneval.jsonl.gz"):
        yield {"id": item["task_id"], "text": item["prompt"], "entry_point": item["entry_point"],
               "canonical_solution": item["canonical_solution"], "test": item["test"]}


def mbpp(source: Path) -> Iterator[dict]:
    for item in _jsonl(source / "mbpp.jsonl"):
        yield {"id": f"MBPP/{item['task_id']}", "task_id": item["task_id"], "text": item["text"],
               "code": item["code"], "test_setup_code": item["test_setup_code"], "test_list": item["test_list"],
               "challenge_test_list": item["challenge_test_list"]}


def gsm8k(source: Path) -> Iterator[dict]:
    for number, item in enumerate(_jsonl(source / "gsm8k_test.jsonl")):
        yield {"id": f"GSM8K/{number}", "text": item["question"], "answer": item["answer"]}


def mmlu(source: Path) -> Iterator[dict]:
    for path in sorted((source / "mmlu_test").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        with open(path, encoding="utf-8", newline="") as handle:
            for number, (question, *choices, letter) in enumerate(csv.reader(handle)):
                yield {"id": f"MMLU/{subject}/{number}", "subject": subject, "text": question,
                       "choices": choices, "answer": "ABCD".index(letter)}


def arc(split: str):
    def items(source: Path) -> Iterator[dict]:
        for number, item in enumerate(_jsonl(source / f"arc_{split}.jsonl")):
            yield {"id": f"ARC-{split.title()}/{number}", "text": item["query"].removeprefix("Question: "),
                   "choices": item["choices"], "answer": item["gold"]}

    return items


def _answers(cell: str) -> list[str]:
    """TruthfulQA's CSV lists answers separated by semicolons, some with one at the end."""
    return [answer.strip() for answer in cell.split(";") if answer.strip()]


def truthfulqa(source: Path) -> Iterator[dict]:
    with open(source / "truthfulqa.csv", encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle)):
            yield {"id": f"TruthfulQA/{number}", "type": row["Type"], "category": row["Category"],
                   "text": row["Question"], "best_answer": row["Best Answer"],
                   "correct_answers": _answers(row["Correct Answers"]),
                   "incorrect_answers": _answers(row["Incorrect Answers"])}


BENCHMARKS = {
    "humaneval": humaneval, "mbpp": mbpp, "gsm8k": gsm8k, "mmlu": mmlu,
    "arc_challenge": arc("challenge"), "arc_easy": arc("easy"), "truthfulqa": truthfulqa,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "benchmarks")
    source = parser.parse_args().source
    OUT.mkdir(parents=True, exist_ok=True)
    for name, items in BENCHMARKS.items():
        path = OUT / f"{name}.jsonl.gz"
        # mtime=0: the same input gives the same bytes, so a rebuild shows no change in git.
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            count = 0
            for item in items(source):
                handle.write((json.dumps(item, ensure_ascii=False) + "\n").encode("utf-8"))
                count += 1
        print(f"{name}: {count} items → {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
