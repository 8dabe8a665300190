"""A key-value file on disk for finished work (embeddings, LLM replies), so an interrupted run resumes.

SQLite gives atomic commits for free: a batch is either stored whole or not at all.

On a cluster (`ShardedStore`) every replica writes a shard of its own and reads the main file, which nobody
writes meanwhile: one writer per file, so nothing waits on a lock and nothing relies on the file locks and
shared memory that WAL mode needs and network file systems (NFS) do not provide. The driver folds the shards
into the main file between two pieces of work (`Store.absorb`).
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import StorageError

_CHUNK = 900  # stays under SQLite's limit on bound parameters per statement
_BUSY_SECONDS = 60.0  # how long a writer waits for another (several commands sharing one cache folder)


class Store:
    def __init__(self, path: Path | str, table: str, frozen: bool = False):
        """`frozen`: open an existing file read-only, as files no one writes while it is open (no locks, no
        WAL index: safe on network file systems)."""
        if not table.isidentifier():
            raise ValueError(f"bad table name {table!r}")
        self.path = Path(path)
        self.table = table
        with self._storing():
            if frozen:
                self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                           check_same_thread=False)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=_BUSY_SECONDS)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self._db.commit()

    @contextlib.contextmanager
    def _storing(self) -> Iterator[None]:
        """The file system's refusals as a `StorageError` naming the file; a batch that failed is not stored,
        those committed before stay."""
        try:
            yield
        except OSError as err:
            raise StorageError(err.filename or self.path, err) from err
        except sqlite3.OperationalError as err:
            refusals = {"disk is full": errno.ENOSPC, "readonly": errno.EROFS, "unable to open": errno.EACCES}
            code = next((number for words, number in refusals.items() if words in str(err)), None)
            if code is None:
                raise
            raise StorageError(self.path, OSError(code, str(err))) from err

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
        with self._storing(), self._db:
            self._db.executemany(f"INSERT OR REPLACE INTO {self.table} VALUES (?, ?)", items.items())

    def __len__(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def absorb(self) -> None:
        """Fold every shard of this store (`ShardedStore`) into it and delete them. Then checkpoint, so that
        the file alone holds everything for the replicas that read it next."""
        for shard in sorted(_shard_folder(self.path).glob(f"{self.table}-*.sqlite")):
            with sqlite3.connect(shard, timeout=_BUSY_SECONDS) as db:
                try:
                    rows = db.execute(f"SELECT key, value FROM {self.table}").fetchall()
                except sqlite3.OperationalError:  # its writer died before creating the table
                    rows = []
            self.put_many(dict(rows))
            for path in (shard, *(shard.with_name(shard.name + end) for end in ("-wal", "-shm"))):
                path.unlink(missing_ok=True)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class ShardedStore:
    """One replica's view of a store on a cluster: writes go to a shard file of its own beside the main
    file, reads look in the shard and then in the main file (as it was when the replica started)."""

    def __init__(self, path: Path | str, table: str):
        path = Path(path)
        self.table = table
        self.own = Store(_shard_folder(path) / f"{table}-{uuid.uuid4().hex}.sqlite", table)
        self.main = Store(path, table, frozen=True) if path.is_file() else None

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(keys)
        found = self.own.get_many(keys)
        if self.main is not None:
            found.update(self.main.get_many([key for key in keys if key not in found]))
        return found

    def put_many(self, items: Mapping[str, bytes]) -> None:
        self.own.put_many(items)

    def close(self) -> None:
        self.own.close()
        if self.main is not None:
            self.main.close()


def _shard_folder(path: Path) -> Path:
    return path.parent / "shards"
