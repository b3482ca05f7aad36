"""The connections, the writer lock and transactions, shared by every per-noun part of the ``Store``.

Writes go through one writer connection behind an ``RLock`` (in-process writers one at a time,
as before). ``transaction()`` is ``BEGIN IMMEDIATE`` (so read-check-write sequences such as
allocation are atomic) and yields a ``Tx``: an opaque handle that callers only pass back into
``Store`` methods. Reads outside a write take a connection from a small pool: in WAL mode they
never wait behind a writer, ours or another process's (issue 16). A writer waits at most
``write_wait`` seconds for the lock (``StateBusy``); a storage failure (disk full, I/O error,
read-only, corrupt) is ``StateUnavailable``, naming the file. No module outside ``ds01.state``
sees a connection, the lock or SQL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ds01.errors import StateBusy, StateUnavailable
from ds01.state.schema import connect, open_db

WRITE_WAIT = 5.0  # seconds a write waits for the lock before "state busy"
_POOL_IDLE = 16  # idle reader connections kept

# primary result codes (sqlite3.h): what a storage failure looks like
_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_STORAGE = {8: "the file is read-only", 10: "a disk I/O error", 11: "the database is corrupt",
            13: "the disk is full", 14: "the file cannot be opened", 26: "the file is not a database"}


def storage_error(e: sqlite3.Error, path: Path, wait: float = WRITE_WAIT) -> Exception:
    """The DS01 error for a sqlite3 failure that is the storage's, not a bug's (else ``e``)."""
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(e)
    if primary in _BUSY or "database is locked" in text:
        return StateBusy(f"the state database is busy: another writer held {path} for over {wait:g} s",
                         "retry in a moment; if it persists, look for a process holding the file "
                         f"(fuser {path})")
    if primary in _STORAGE or "disk is full" in text or "disk I/O" in text or "readonly" in text:
        why = _STORAGE.get(primary or 0, text)
        return StateUnavailable(f"the state database {path} cannot be written: {why} ({text})",
                                "free space on (or repair) its filesystem; nothing was changed by this request")
    return e


class Tx:
    """An open transaction. Opaque outside ``ds01.state``: pass it to ``Store`` methods."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn


class StoreBase:
    def __init__(self, path: Path | str, init: bool = False, write_wait: float = WRITE_WAIT):
        """Open (create, migrate) the DB. ``init``: move an invalid file aside and start afresh
        (``ds01d --init-state``); without it, an invalid file raises ``StateUnavailable``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write_wait = write_wait
        self._writer = open_db(self.path, init=init, timeout=write_wait)
        self._lock = threading.RLock()
        self._local = threading.local()  # .depth: how deep this thread is inside the writer lock
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()

    @property
    def _conn(self) -> sqlite3.Connection:
        """The writer connection (use only while holding ``_lock``)."""
        return self._writer

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        with self._pool_lock:
            for c in self._pool:
                c.close()
            self._pool.clear()

    def _map(self, e: sqlite3.Error) -> Exception:
        return storage_error(e, self.path, self.write_wait)

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """Hold the writer lock (bounded wait) with the writer connection."""
        if not self._lock.acquire(timeout=self.write_wait):
            raise StateBusy(f"the state database is busy: a write waited over {self.write_wait:g} s",
                            "retry in a moment")
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield self._writer
        finally:
            self._local.depth -= 1
            self._lock.release()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._writing() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._map(e) from e
            try:
                yield Tx(conn)
            except BaseException as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # a failed statement may have ended the transaction already
                if isinstance(e, sqlite3.Error):
                    mapped = self._map(e)
                    if mapped is not e:
                        raise mapped from e
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as e:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise self._map(e) from e

    def ensure_writable(self) -> None:
        """Fail now (``StateUnavailable``/``StateBusy``) if a change could not be recorded: call it
        before an engine action whose outcome must be written afterwards (stop, remove)."""
        with self.transaction() as tx:
            tx._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_write', ?)", (str(time.time()),))

    def backup(self, dest: Path) -> dict[str, int]:
        """A consistent copy of the live DB at ``dest`` (SQLite's online backup: writers carry
        on meanwhile), made under a temporary name, mode 0600. Its size and schema version."""
        tmp = dest.with_name(dest.name + ".part")
        tmp.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            src, dst = connect(self.path, self.write_wait), sqlite3.connect(str(tmp))
            try:
                src.backup(dst, pages=1024)
                version = dst.execute("PRAGMA user_version").fetchone()[0]
            finally:
                dst.close()
                src.close()
            os.replace(tmp, dest)
        except sqlite3.Error as e:
            tmp.unlink(missing_ok=True)
            raise self._map(e) from e
        return {"bytes": dest.stat().st_size, "schema": version}

    def _reader(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return connect(self.path, self.write_wait)

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        if getattr(self._local, "depth", 0):  # inside this thread's write: see what it wrote
            try:
                return self._writer.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._map(e) from e
        try:
            conn = self._reader()
        except sqlite3.Error as e:
            raise self._map(e) from e
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            conn.close()
            mapped = self._map(e)
            if mapped is e:
                raise
            raise mapped from e
        with self._pool_lock:
            if len(self._pool) < _POOL_IDLE:
                self._pool.append(conn)
                return rows
        conn.close()
        return rows

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; the new row's id for an INSERT, else the rows changed."""
        cur = self._cursor(None, sql, args)
        return cur.lastrowid or cur.rowcount

    def _cursor(self, tx: Tx | None, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        """Run one statement inside ``tx`` (whose lock the caller holds), else on its own."""
        if tx is not None:
            return tx._conn.execute(sql, args)  # errors are mapped where the transaction ends
        with self._writing() as conn:
            try:
                return conn.execute(sql, args)
            except sqlite3.Error as e:
                mapped = self._map(e)
                if mapped is e:
                    raise
                raise mapped from e

    def _rows(self, tx: Tx | None, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """A query's rows, inside ``tx`` or on its own."""
        if tx is not None:
            return tx._conn.execute(sql, args).fetchall()
        return self._query(sql, args)

