"""Replacing a small file atomically: the one way the daemon and the CLI rewrite the config, the
catalog overlay and the Slurm include file (no I/O layer of its own: the CLI may use it too)."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``text`` atomically: a temp file in the same directory, written,
    given ``mode`` (and ``owner`` when root), fsync-ed, renamed over it; removed on any failure,
    so readers see the old file or the new one, never a part."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(f.fileno(), *owner)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
