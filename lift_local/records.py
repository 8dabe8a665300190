"""The record every phase shares, and reading and writing it.

Readers accept Alpaca JSON arrays, JSONL, ShareGPT (`conversations` with `from`/`value`) and OpenAI-style
`messages`, in a JSON array or one per JSONL line, and normalise them to instruction / input / output.
Every problem with the input is a `InputError` naming the file, the line or record and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonlines

from .errors import InputError

META_KEY = "lift"  # where lift-local keeps its own metadata (provenance, scores) in written records
CORE_FIELDS = ("instruction", "input", "output")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "bot", "model"}


@dataclasses.dataclass(frozen=True)
class Record:
    """One instruction record.

    `meta` is lift-local's own (provenance, phase results); `extra` holds the source's unknown fields
    verbatim so that nothing the user had is lost.
    """

    instruction: str
    input: str
    output: str
    id: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> Record:
        return dataclasses.replace(self, **changes)

    def with_meta(self, **meta: Any) -> Record:
        return dataclasses.replace(self, meta={**self.meta, **meta})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
            **self.extra,
            META_KEY: self.meta,
        }


def content_id(instruction: str, input: str, output: str) -> str:
    """A stable id from the content, so the same record gets the same id in every run."""
    digest = hashlib.sha256("\x1f".join((instruction, input, output)).encode("utf-8"))
    return digest.hexdigest()[:16]


def embedding_text(record: Record) -> str:
    """The text LIFT embeds for a record (LIFT.md, phase 3)."""
    if record.input:
        return f"<INST> {record.instruction} Input: {record.input} </INST> {record.output}"
    return f"<INST> {record.instruction} </INST> {record.output}"


def read_records(path: Path | str) -> list[Record]:
    """Read any supported format; raise `InputError` on the first problem found."""
    path = Path(path)
    items = parse_json_items(path, read_text(path))
    if not items:
        raise InputError(path, None, "the file holds no records")
    records = [_normalise(path, where, index, item) for index, (where, item) in enumerate(items)]
    return _disambiguate_ids(records)


def write_records(path: Path | str, records: Iterable[Record]) -> int:
    """Write JSONL atomically: readers see the old file or the complete new one, never a partial one."""
    with atomic_path(path) as tmp, jsonlines.open(tmp, mode="w", compact=True) as writer:
        count = 0
        for record in records:
            writer.write(record.to_json())
            count += 1
    return count


class atomic_path:
    """Context manager yielding a temporary path beside `path`, renamed onto it only on success."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes it private; the output should be like any new file
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def parse_json_items(path: Path, raw: str) -> list[tuple[str, Any]]:
    """(where, item) pairs of a JSON array or of JSONL, `where` naming the record or line for messages."""
    if raw.lstrip().startswith("["):
        return _parse_json_array(path, raw)
    return list(_parse_jsonl(path, raw))


def read_text(path: Path) -> str:
    """A file's UTF-8 text; a missing, unreadable, empty or non-UTF-8 file is an `InputError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, None, "is a directory, not a file") from None
    except OSError as err:
        raise InputError(path, None, f"cannot be read: {err.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(path, f"line {line}", f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None
    if not text.strip():
        raise InputError(path, None, "the file is empty")
    return text


def _parse_json_array(path: Path, raw: str) -> list[tuple[str, Any]]:
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(path, f"line {err.lineno} column {err.colno}", f"malformed JSON: {err.msg}") from None
    if not isinstance(items, list):
        raise InputError(path, None, "expected a JSON array of records")
    return [(f"record {i}", item) for i, item in enumerate(items)]


def _parse_jsonl(path: Path, raw: str) -> Iterator[tuple[str, Any]]:
    # json.loads per line rather than jsonlines.Reader: the reader does not expose the line number of a
    # good line, and every record must be traceable to its line.
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(path, f"line {lineno} column {err.colno}", f"malformed JSON: {err.msg}") from None


def _normalise(path: Path, where: str, index: int, item: Any) -> Record:
    if not isinstance(item, dict):
        raise InputError(path, where, f"expected a JSON object, got {_json_type(item)}")
    item = dict(item)
    meta = item.pop(META_KEY, None)
    if isinstance(meta, dict) and isinstance(item.get("id"), str):
        # A record lift-local wrote: keep its id and metadata as they are.
        record_id = item.pop("id")
        fields = _core_fields(path, where, item)
        for name in CORE_FIELDS:
            item.pop(name, None)
        return Record(**fields, id=record_id, meta=meta, extra=item)
    if "conversations" in item:
        fields, extra = _from_turns(path, where, item, "conversations", "from", "value")
    elif "messages" in item:
        fields, extra = _from_turns(path, where, item, "messages", "role", "content")
    else:
        fields = _core_fields(path, where, item)
        extra = {key: value for key, value in item.items() if key not in CORE_FIELDS}
    if "id" in extra:
        extra["source_id"] = extra.pop("id")
    provenance = {"origin": "original", "source": {"file": path.name, "index": index}}
    return Record(**fields, id=content_id(**fields), meta=provenance, extra=extra)


def _core_fields(path: Path, where: str, item: dict) -> dict[str, str]:
    """`input` may be absent; `output` must be present but may be empty (enhancement will write one)."""
    fields = {}
    for name in CORE_FIELDS:
        value = item.get(name)
        if value is None and name == "input":
            value = ""
        elif value is None:
            raise InputError(path, where, f"missing field '{name}'")
        elif not isinstance(value, str):
            raise InputError(path, where, f"field '{name}' must be a string, got {_json_type(value)}")
        fields[name] = value
    if not fields["instruction"].strip():
        raise InputError(path, where, "field 'instruction' is empty")
    return fields


def _from_turns(path: Path, where: str, item: dict, key: str, role_key: str, text_key: str):
    """First user turn → instruction, the assistant turn after it → output; a system turn is kept as extra."""
    turns = item[key]
    if not isinstance(turns, list):
        raise InputError(path, where, f"field '{key}' must be a list of turns, got {_json_type(turns)}")
    system, instruction, output, used = None, None, None, 0
    for number, turn in enumerate(turns):
        turn_where = f"{where}, {key}[{number}]"
        if not isinstance(turn, dict):
            raise InputError(path, turn_where, f"expected a turn object, got {_json_type(turn)}")
        role, text = turn.get(role_key), turn.get(text_key)
        if not isinstance(role, str):
            raise InputError(path, turn_where, f"field '{role_key}' must be a string, got {_json_type(role)}")
        if not isinstance(text, str):
            raise InputError(path, turn_where, f"field '{text_key}' must be a string, got {_json_type(text)}")
        if role == "system" and instruction is None:
            system = text
        elif role in _USER_ROLES and instruction is None:
            instruction = text
        elif role in _ASSISTANT_ROLES and instruction is not None:
            output = text
            used = number + 1
            break
    if instruction is None or not instruction.strip():
        raise InputError(path, where, f"'{key}' has no user turn to take as the instruction")
    if output is None or not output.strip():
        raise InputError(path, where, f"'{key}' has no assistant turn answering the first user turn")
    extra = {k: v for k, v in item.items() if k != key}
    if system is not None:
        extra["system"] = system
    if used < len(turns):
        extra[f"{key}_after_first_exchange"] = turns[used:]
    return {"instruction": instruction, "input": "", "output": output}, extra


def _disambiguate_ids(records: list[Record]) -> list[Record]:
    """Exact duplicates would share an id; number the repeats so every id names one record."""
    seen: dict[str, int] = {}
    result = []
    for record in records:
        count = seen.get(record.id, 0)
        seen[record.id] = count + 1
        result.append(record if count == 0 else record.replace(id=f"{record.id}-{count}"))
    return result


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
