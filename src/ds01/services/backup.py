"""``ds01 admin backup``: a consistent copy of the state DB while the daemon runs (issue 16).

Each backup is made with SQLite's online backup API into ``<state dir>/backups/`` (root-only,
the newest ``KEEP`` kept) and, when the admin names a file, streamed to the CLI, which writes it
as the admin: the daemon never writes where a caller points it.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Iterator

from ds01.services.identity import Caller

KEEP = 5
CHUNK = 192 * 1024  # bytes per streamed line (base64: 256 KiB)


def backup_dir(state_db: Path) -> Path:
    return state_db.parent / "backups"


def make_backup(ctx, who: Caller, download: bool) -> Iterator[dict]:
    """Make a backup; yield ``{"backup": {path, bytes, schema}}``, then (``download``) its bytes
    as ``{"chunk": base64}`` lines, then ``{"result": {…, sha256}}``."""
    store = ctx.store
    d = backup_dir(store.path)
    d.mkdir(mode=0o700, exist_ok=True)
    dest = d / f"state-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{time.time_ns() % 10**6:06d}.db"
    info = {"path": str(dest), **store.backup(dest), "at": time.time()}
    for old in sorted(d.glob("state-*.db"))[:-KEEP]:
        old.unlink(missing_ok=True)
    ctx.events.emit("admin.backup", user=who.name, uid=who.uid, target=str(dest), data=info)
    yield {"backup": info}
    digest = hashlib.sha256()
    if download:
        with open(dest, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
                yield {"chunk": base64.b64encode(block).decode()}
    yield {"result": {**info, "sha256": digest.hexdigest() if download else None}}
