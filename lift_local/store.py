"""A key-value file on disk for finished work (embeddings, LLM replies), so an interrupted run resumes.

SQLite gives atomic commits for free: a batch is either stored whole or not at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

_CHUNK = 900  # stays under SQLite's limit on bound parameters per statement


class Store:
    def __init__(self, path: Path | str, table: str):
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table = table
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM {self.table} WHERE key IN ({marks})", chunk)
            found.update(rows)
        return found

    def put_many(self, items: Mapping[str, bytes]) -> None:
        with self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?)", items.items())

    def __len__(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()
