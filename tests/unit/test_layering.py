"""Structure rules, checked by scanning the source (cheap; no imports).

* Every SQL statement and every DDL lives in ``ds01.state``; nothing else touches the store's
  connection or lock, or runs SQL on a transaction handle (issue 11).
* No module under src/ is over 600 lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "ds01"
STATE = PKG / "state"
MAX_LINES = 600

# upper-case keywords only, so prose ("select the image from ...") never matches
SQL = re.compile(
    r"\bSELECT\b[^\n]*?\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|DROP)\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\bALTER\s+TABLE\b"
    r"|\bPRAGMA\s+\w+"
    r"|\bBEGIN\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED)\b"
)
# the store's private parts, SQL run on a transaction handle or connection, sqlite3 itself
RAW = re.compile(
    r"\bstore\._\w+"
    r"|\b(?:conn|tx|con|cur)\.(?:execute|executemany|executescript|fetchone|fetchall)\("
    r"|\b(?:tx|conn)\._conn\b"
    r"|^\s*(?:import\s+sqlite3|from\s+sqlite3\s+import)",
    re.MULTILINE,
)


def _outside_state() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if STATE not in p.parents)


def _hits(pattern: re.Pattern, path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in pattern.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out.append(f"{path.relative_to(SRC)}:{line}: {m.group(0).strip()!r}")
    return out


def test_the_scan_sees_the_package_and_the_patterns_match():
    assert len(_outside_state()) > 20
    assert _hits(SQL, STATE / "schema.py") and _hits(SQL, STATE / "queue.py")
    for bad in ('q("SELECT * FROM queue")', "INSERT OR REPLACE INTO t", "UPDATE queue SET x=1", "PRAGMA foo",
                "DELETE FROM events", "CREATE TABLE IF NOT EXISTS t", "CREATE UNIQUE INDEX i"):
        assert SQL.search(bad), bad
    for ok in ("select the image from the catalog", "Update the container", "delete it from disk"):
        assert not SQL.search(ok), ok
    for bad in ("ctx.store._conn.executescript(x)", "with self.ctx.store._lock:", 'conn.execute("x")',
                "tx._conn", "import sqlite3"):
        assert RAW.search(bad), bad
    assert not RAW.search("conn.close()") and not RAW.search("self._lock = threading.Lock()")


def test_no_sql_outside_the_state_package():
    hits = [h for p in _outside_state() for h in _hits(SQL, p)]
    assert not hits, "SQL belongs in ds01.state (add a Store method):\n" + "\n".join(hits)


def test_nothing_outside_state_touches_the_connection_or_the_lock():
    hits = [h for p in _outside_state() for h in _hits(RAW, p)]
    assert not hits, ("only ds01.state may use the connection, the lock or sqlite3; pass the "
                      "transaction handle back into Store methods:\n" + "\n".join(hits))


def test_no_module_is_over_600_lines():
    long = []
    for p in sorted(SRC.rglob("*.py")):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            long.append(f"{p.relative_to(SRC)}: {n} lines")
    assert not long, f"split these modules (at most {MAX_LINES} lines each):\n" + "\n".join(long)


VALIDATORS = ["names.py", "images/dockerfile.py", "images/dockerfile_check.py", "images/catalog.py",
              "images/bootstrap.py", "projects/git.py", "policy/environment.py", "models/gpu.py"]


def test_validation_patterns_match_the_whole_string():
    """'$' also matches before a trailing newline: 'evil\\n' would pass a '^…$' check and put a
    newline into a Dockerfile, a path or a name (issue 15). Validators end their patterns in \\Z."""
    src = Path(__file__).resolve().parents[2] / "src" / "ds01"
    bad = []
    for rel in VALIDATORS:
        for n, line in enumerate((src / rel).read_text().splitlines(), 1):
            if "re.compile(" in line and re.search(r"""\$["'](\)|, re\.)""", line):
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_a_trailing_newline_is_refused_by_the_validators():
    from ds01.errors import InvalidInput
    from ds01.images import catalog, dockerfile

    for pattern in (dockerfile._APT_RE, dockerfile._PIP_SAFE_RE, dockerfile._PROJECT_RE, catalog._DRIVER_RE):
        assert pattern.match("abc1") or pattern.match("550") or pattern.match("1.2")
        assert not pattern.match("abc1\n") and not pattern.match("550\n")
    with pytest.raises(InvalidInput):
        from ds01.names import validate_project
        validate_project("evil\n")
