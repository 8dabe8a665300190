"""The curated records in the formats trainers read.

- `alpaca`: a JSON array of {instruction, input, output} (Alpaca, LLaMA-Factory's alpaca format).
- `messages`: JSONL of {"messages": [user, assistant]} (TRL's SFTTrainer, axolotl's chat_template type,
  LLaMA-Factory's sharegpt format with role/content tags). The input, when present, follows the
  instruction in the user turn, separated by a blank line.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonlines

from .records import Record, atomic_path

FORMATS = {"alpaca": "curated.alpaca.json", "messages": "curated.messages.jsonl"}


def write(out_dir: Path, records: list[Record], fmt: str) -> str:
    """Write `records` in `fmt` into `out_dir`; returns the file name."""
    name = FORMATS[fmt]
    with atomic_path(out_dir / name) as tmp:
        if fmt == "alpaca":
            rows = [{"instruction": r.instruction, "input": r.input, "output": r.output} for r in records]
            tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            with jsonlines.open(tmp, mode="w", compact=True) as writer:
                writer.write_all({"messages": as_messages(r)} for r in records)
    return name


def as_messages(record: Record) -> list[dict[str, str]]:
    user = f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record.output}]
