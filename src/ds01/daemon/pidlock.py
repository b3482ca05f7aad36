"""One ds01d per root: a lock file under the state directory, ``flock``-ed for the daemon's life.

The kernel drops the lock when the process dies (SIGKILL included), so a stale file never blocks
a start; the pid written in it is only there to be named in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ds01.errors import ConfigError

_held: list[int] = []  # the descriptor, kept open (and so locked) until the process exits


def acquire(path: Path) -> int:
    """Lock ``path`` and write our pid in it; ``ConfigError`` naming the holder's pid if another
    process holds it. Returns the descriptor (held until exit; ``release`` for tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)
        raise ConfigError(f"refusing to start: another ds01d (pid {pid}) is running on this root ({path} is locked)",
                          f"stop it first (kill {pid}), or give this one another --root")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held.append(fd)
    return fd


def release(fd: int) -> None:
    if fd in _held:
        _held.remove(fd)
    os.close(fd)
