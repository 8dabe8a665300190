"""The curated records in the formats trainers read.

- `alpaca`: a JSON array of {instruction, input, output} (Alpaca, LLaMA-Factory's alpaca format).
- `messages`: JSONL of {"messages": [user, assistant]} (TRL's SFTTrainer, axolotl's chat_template type,
  LLaMA-Factory's sharegpt format with role/content tags). The input, when present, follows the
  instruction in the user turn, separated by a blank line.
- `sharegpt`: JSONL of {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}, the original
  ShareGPT tags that LLaMA-Factory's sharegpt format and axolotl's sharegpt datasets read by default; a
  system prompt the input had comes first.
- `parquet`: one Parquet file of id, instruction, input, output (pandas, polars, `datasets`, LLaMA-Factory).
- `datasets`: the same columns as a Hugging Face `save_to_disk` folder, for `datasets.load_from_disk`.
  Named after the library whose format it is: "hf" could as well mean the Hub or its Parquet files.

The tabular formats keep lift-local's `id`, so curated rows can be traced back to the run's records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jsonlines
import pyarrow as pa
import pyarrow.parquet as pq

from .records import Record, atomic_path

FORMATS = {
    "alpaca": "curated.alpaca.json",
    "messages": "curated.messages.jsonl",
    "sharegpt": "curated.sharegpt.jsonl",
    "parquet": "curated.parquet",
    "datasets": "curated.dataset",  # a folder
}
_SHAREGPT_TAGS = {"system": "system", "user": "human", "assistant": "gpt"}
_COLUMNS = ("id", "instruction", "input", "output")
_SCHEMA = pa.schema([(name, pa.string()) for name in _COLUMNS])
_BLOCK_ROWS = 65_536  # rows per Parquet row group: a million records are never one Arrow table in memory


def write(out_dir: Path, records: list[Record], fmt: str) -> str:
    """Write `records` in `fmt` into `out_dir`; returns the file (or folder) name."""
    name = FORMATS[fmt]
    with atomic_path(out_dir / name, folder=fmt == "datasets") as tmp:
        _WRITERS[fmt](tmp, records)
    return name


def as_messages(record: Record) -> list[dict[str, str]]:
    user = f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": record.output}]


def as_sharegpt(record: Record) -> list[dict[str, str]]:
    system = record.extra.get("system")  # where the readers keep a system turn of the input
    turns = [{"role": "system", "content": system}] if isinstance(system, str) and system else []
    return [{"from": _SHAREGPT_TAGS[t["role"]], "value": t["content"]} for t in turns + as_messages(record)]


def _alpaca(path: Path, records: list[Record]) -> None:
    rows = [{"instruction": r.instruction, "input": r.input, "output": r.output} for r in records]
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _jsonl(key: str, turns: Callable[[Record], list[dict[str, str]]]) -> Callable[[Path, list[Record]], None]:
    def write_turns(path: Path, records: list[Record]) -> None:
        with jsonlines.open(path, mode="w", compact=True) as writer:
            writer.write_all({key: turns(r)} for r in records)

    return write_turns


def _table(records: list[Record]) -> pa.Table:
    return pa.table({name: pa.array([getattr(r, name) for r in records], pa.string()) for name in _COLUMNS})


def _parquet(path: Path, records: list[Record]) -> None:
    with pq.ParquetWriter(path, _SCHEMA) as writer:
        for start in range(0, len(records), _BLOCK_ROWS):
            writer.write_table(_table(records[start : start + _BLOCK_ROWS]))


def _datasets(folder: Path, records: list[Record]) -> None:
    """What `Dataset.save_to_disk` writes for one shard: the data as an Arrow IPC stream whose schema
    carries the `datasets` features, dataset_info.json with the same features, and state.json naming the
    shard. (`datasets` itself is not needed to write it, only to load it.)"""
    features = {column: {"dtype": "string", "_type": "Value"} for column in _COLUMNS}
    table = _table(records)
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    shard = "data-00000-of-00001.arrow"
    with pa.OSFile(str(folder / shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    fingerprint = hashlib.sha256((folder / shard).read_bytes()).hexdigest()[:16]  # same data, same value
    state = {"_data_files": [{"filename": shard}], "_fingerprint": fingerprint, "_format_columns": None,
             "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")


_WRITERS: dict[str, Callable[[Path, list[Record]], None]] = {
    "alpaca": _alpaca,
    "messages": _jsonl("messages", as_messages),
    "sharegpt": _jsonl("conversations", as_sharegpt),
    "parquet": _parquet,
    "datasets": _datasets,
}
