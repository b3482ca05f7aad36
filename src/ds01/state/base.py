"""The connection, its lock and transactions, shared by every per-noun part of the ``Store``.

One connection serves the daemon's worker threads behind an ``RLock``. ``transaction()`` is
``BEGIN IMMEDIATE`` (so read-check-write sequences such as allocation are atomic) and yields a
``Tx``: an opaque handle that callers only pass back into ``Store`` methods. No module outside
``ds01.state`` sees the connection, the lock or SQL.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ds01.state.schema import open_db


class Tx:
    """An open transaction. Opaque outside ``ds01.state``: pass it to ``Store`` methods."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn


class StoreBase:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = open_db(self.path)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; the new row's id for an INSERT, else the rows changed."""
        with self._lock:
            cur = self._conn.execute(sql, args)
            return cur.lastrowid or cur.rowcount

    def _cursor(self, tx: Tx | None, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        """Run one statement inside ``tx`` (whose lock the caller holds), else on its own."""
        if tx is not None:
            return tx._conn.execute(sql, args)
        with self._lock:
            return self._conn.execute(sql, args)

    def _rows(self, tx: Tx | None, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """A query's rows, inside ``tx`` or on its own (fetched under the lock)."""
        if tx is not None:
            return tx._conn.execute(sql, args).fetchall()
        return self._query(sql, args)
