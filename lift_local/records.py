"""The record every phase shares, and reading and writing it.

Readers accept Alpaca JSON arrays, JSONL, ShareGPT (`conversations` with `from`/`value`) and OpenAI-style
`messages`, in a JSON array or one per JSONL line, and the same records as rows of a Parquet file, a CSV/TSV
file or a Hugging Face `datasets` folder (`save_to_disk`, read with pyarrow so `datasets` is not needed).
All are normalised to instruction / input / output by the same checks. Every problem with the input is an
`InputError` naming the file, the line, record or row and what is wrong. Rows count from 0, like the
records of a JSON array and `dataset[i]`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonlines
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, StorageError

META_KEY = "lift"  # where lift-local keeps its own metadata (provenance, scores) in written records
CORE_FIELDS = ("instruction", "input", "output")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "bot", "model"}
_BATCH_ROWS = 1024  # rows per Arrow record batch read from Parquet


ORIGINAL, EXPANDED = "original", "expanded"  # a record's origin


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a record came from, as its metadata holds it (LIFT.md: every record can be traced to its source):
    an original of the input file (`source`: its file and position), or a record that expansion made in
    `round` by rewriting `parent`, whose first ancestor is `root`."""

    origin: str  # ORIGINAL or EXPANDED
    source: dict[str, Any] | None = None
    round: int | None = None
    parent: str | None = None
    root: str | None = None

    def to_meta(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def of(cls, record: Record) -> Provenance:
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.meta.items() if key in fields and key != "origin"},
                   origin=record.meta.get("origin", ORIGINAL))

    def describe(self) -> str:
        return f"{self.origin}, round {self.round}" if self.round else self.origin


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

    @property
    def origin(self) -> str:
        """Where the record came from, in words ("expanded, round 2"), as record cards show it."""
        return Provenance.of(self).describe()

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


def read_records(path: Path | str, fields: Mapping[str, str] | None = None) -> list[Record]:
    """Read any supported format; raise `InputError` on the first problem found.

    `fields` maps lift-local's names to the user's columns (e.g. {"instruction": "prompt"}), so data need
    not be rewritten to be read. A bad mapping is a `ValueError` (the caller's mistake, not the data's).
    """
    return list(iter_records(path, fields))


def iter_records(path: Path | str, fields: Mapping[str, str] | None = None) -> Iterator[Record]:
    """`read_records` one record at a time, for a reader that need not hold them all (a Ray run's driver).
    A JSON array is one JSON value and is parsed whole; JSONL, CSV, Parquet and `datasets` folders give
    their records as they are parsed."""
    path = Path(path)
    mapping = _check_mapping(fields or {})
    seen: dict[str, int] = {}  # id -> how often so far: exact duplicates would share a content id
    first: dict[str, str] = {}
    for index, (where, item) in enumerate(_read_items(path)):
        record = _normalise(path, where, index, item, mapping)
        count = seen.get(record.id, 0)
        # Number the repeats so every id names one record; an id of the user's own that repeats is an error:
        # renaming it would break matching on it.
        if count and record.id != content_id(record.instruction, record.input, record.output):
            raise InputError(path, where, f"id {record.id!r} again (first at {first[record.id]}); ids must be unique")
        seen[record.id] = count + 1
        first.setdefault(record.id, where)
        yield record if count == 0 else record.replace(id=f"{record.id}-{count}")
    if not seen:
        raise InputError(path, None, "the file holds no records")


def parse_field_options(options: Iterable[str]) -> dict[str, str]:
    """`["instruction=prompt", ...]` (repeated `--field` options) as a mapping for `read_records`."""
    mapping: dict[str, str] = {}
    for option in options:
        name, sep, column = (part.strip() for part in option.partition("="))
        if not sep or not name or not column:
            raise ValueError(f"expected NAME=COLUMN (e.g. instruction=prompt), got {option!r}")
        if name in mapping:
            raise ValueError(f"'{name}' is mapped twice ({name}={mapping[name]} and {option})")
        mapping[name] = column
    return _check_mapping(mapping)


def write_records(path: Path | str, records: Iterable[Record]) -> int:
    """Write JSONL atomically: readers see the old file or the complete new one, never a partial one."""
    with atomic_path(path) as tmp, jsonlines.open(tmp, mode="w", compact=True) as writer:
        count = 0
        for record in records:
            writer.write(record.to_json())
            count += 1
    return count


class atomic_path:
    """Context manager yielding a temporary path beside `path`, renamed onto it only on success.

    With `folder=True` it yields a temporary folder. A folder cannot be renamed over a non-empty one, so
    the old folder is moved aside first and removed after: readers never see a partial folder, at worst
    none for an instant.
    """

    def __init__(self, path: Path | str, folder: bool = False):
        self.path = Path(path)
        self.folder = folder

    def __enter__(self) -> Path:
        options = {"prefix": f".{self.path.name}.", "suffix": ".tmp", "dir": self.path.parent}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.folder:
                name = tempfile.mkdtemp(**options)
                os.chmod(name, 0o777 & ~_UMASK)
            else:
                fd, name = tempfile.mkstemp(**options)
                os.close(fd)
                os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes it private; the output is like any new file
        except OSError as err:
            raise StorageError(self._blamed(err), err) from err
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._replace()
                return
        except OSError as err:
            exc = err
        if self.folder:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a read-only folder: one line naming the file, nothing partial
            raise StorageError(self._blamed(exc), exc) from exc

    def _blamed(self, error: OSError) -> Path | str:
        """The file to name: the one the error is about, unless that is our temporary file (then the output)."""
        named = error.filename
        return self.path if named is None or Path(named).name.startswith(f".{self.path.name}.") else named

    def _replace(self) -> None:
        if self.folder and self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.path.parent))
            os.replace(self.path, old / self.path.name)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.path)


def parse_json_items(path: Path, raw: str) -> Iterator[tuple[str, Any]]:
    """(where, item) pairs of a JSON array or of JSONL, `where` naming the record or line for messages. JSONL
    is parsed a line at a time as items are taken; a JSON array is one value, parsed whole."""
    if raw.lstrip().startswith("["):
        return iter(_parse_json_array(path, raw))
    return _parse_jsonl(path, raw)


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


def _read_items(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, item) pairs of any supported format, chosen by what the path is."""
    if path.is_dir():
        return _dataset_items(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _rows(_parquet_batches(path))
    if suffix in (".csv", ".tsv"):
        return _csv_items(path, "\t" if suffix == ".tsv" else ",")
    return parse_json_items(path, read_text(path))


def _parquet_batches(path: Path) -> Iterator[pa.RecordBatch]:
    # In record batches: a large file is never held whole as an Arrow table beside its records.
    with _arrow_errors(path, "Parquet"):
        yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)


def _dataset_items(folder: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a `save_to_disk` folder: its `data-*.arrow` shards (Arrow IPC streams) in state.json order."""
    if (folder / "dataset_dict.json").is_file():
        folder = _pick_split(folder)
    state = folder / "state.json"
    if not state.is_file():
        raise InputError(folder, None, "is a folder but not a Hugging Face datasets folder "
                                       "(no state.json or dataset_dict.json, as save_to_disk writes)")
    try:
        shards = [entry["filename"] for entry in json.loads(read_text(state))["_data_files"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(state, None, "not a datasets state.json (no list of _data_files)") from None
    # One row count across shards, as dataset[i] numbers them.
    return _rows(itertools.chain.from_iterable(_stream_batches(folder / shard) for shard in shards))


def _stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with _arrow_errors(path, "Arrow stream"), pa.memory_map(str(path)) as source:
        yield from pa.ipc.open_stream(source)


def _pick_split(folder: Path) -> Path:
    """A DatasetDict's `train` split, or its only split; with several and no `train`, the user must choose."""
    try:
        splits = json.loads(read_text(folder / "dataset_dict.json"))["splits"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(folder / "dataset_dict.json", None, "not a datasets dataset_dict.json") from None
    if "train" in splits or len(splits) == 1:
        return folder / ("train" if "train" in splits else splits[0])
    raise InputError(folder, None, f"a DatasetDict with splits {', '.join(splits)} and no 'train': "
                                   f"give one split's folder, e.g. {folder / splits[0]}")


def _rows(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, dict]]:
    rows = (row for batch in batches for row in batch.to_pylist())
    return ((f"row {number}", row) for number, row in enumerate(rows))


@contextlib.contextmanager
def _arrow_errors(path: Path, kind: str) -> Iterator[None]:
    """Turns pyarrow's errors while opening or reading `path` into an `InputError` naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (pa.ArrowException, OSError) as err:
        raise InputError(path, None, f"not a readable {kind} file: {err}") from None


def _csv_items(path: Path, delimiter: str) -> Iterator[tuple[str, dict]]:
    """Rows under a header line; every cell is text, an absent cell is missing (not empty)."""
    # strict: a stray quote is an error, not the rest of the file swallowed into one cell
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    try:
        for number, row in enumerate(reader):
            where = f"row {number} (line {reader.line_num})"
            if None in row:
                raise InputError(path, where, f"has more cells than the header's {len(reader.fieldnames)}")
            yield where, {column: cell for column, cell in row.items() if cell is not None}
    except csv.Error as err:
        raise InputError(path, f"line {reader.line_num}", f"malformed CSV: {err}") from None


def _check_mapping(fields: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(fields) - set(CORE_FIELDS))
    if unknown:
        raise ValueError(f"cannot map {', '.join(unknown)}: the fields are {', '.join(CORE_FIELDS)}")
    columns = list(fields.values())
    twice = sorted({column for column in columns if columns.count(column) > 1})
    if twice:
        raise ValueError(f"column {', '.join(twice)} is mapped to more than one field")
    return dict(fields)


def _apply_mapping(path: Path, where: str, item: dict, mapping: dict[str, str]) -> dict:
    """The user's columns renamed to lift-local's; a column the mapping displaces is kept as source_<name>."""
    for name, column in mapping.items():
        if column not in item:
            raise InputError(path, where, f"no column '{column}' (mapped to {name}); "
                                          f"its columns are: {', '.join(map(str, item)) or 'none'}")
    values = {name: item.pop(column) for name, column in mapping.items()}
    for name in values:
        if name in item:
            item[f"source_{name}"] = item.pop(name)
    return {**item, **values}


def _normalise(path: Path, where: str, index: int, item: Any, mapping: dict[str, str]) -> Record:
    if not isinstance(item, dict):
        raise InputError(path, where, f"expected a JSON object, got {_json_type(item)}")
    item = _apply_mapping(path, where, dict(item), mapping)
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
    provenance = Provenance(ORIGINAL, source={"file": path.name, "index": index})
    return Record(**fields, id=_user_id(path, where, extra.pop("id", None)) or content_id(**fields),
                  meta=provenance.to_meta(), extra=extra)


def _user_id(path: Path, where: str, value: Any) -> str | None:
    """The record's own id, kept as its id so that scores and results can be matched to the user's data."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, where, f"field 'id' must be a string or an integer, got {_json_type(value)}")
    return str(value)


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


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
