"""Private by default (issue 15): the owner and mode of every directory and file the daemon owns,
enforced at each start, so an install that made one too open (``/var/log/ds01`` 0755 from an old
setup script) is fixed rather than trusted.

The events carry the exact commands users ran, the state DB every container and allocation: only
root (the daemon) reads them; admins read them through the API. The socket's directory stays
traversable (0755, root's) so every user can reach the socket. Mount points under ``mounts/`` are
never touched: while one is pinned it *is* a user's workspace.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ds01.errors import ConfigError
from ds01.paths import Paths

log = logging.getLogger("ds01d")

STATE_DIR = 0o700
LOG_DIR = 0o750
SOCKET_DIR = 0o755
DB_FILE = 0o600
EVENTS_FILE = 0o600


def layout(paths: Paths, socket_dir: Path | None) -> list[tuple[Path, int, bool]]:
    """(path, mode, is a directory) for everything the daemon owns; directories first.
    ``socket_dir`` None: the socket lives somewhere the daemon does not own (``--socket``)."""
    dirs = [(paths.state_dir, STATE_DIR), (paths.state_dir / "mounts", STATE_DIR),
            (paths.state_dir / "accounts", STATE_DIR), (paths.state_dir / "jobs", STATE_DIR),
            (paths.log_dir, LOG_DIR)]
    if socket_dir is not None:
        dirs.append((socket_dir, SOCKET_DIR))
    out = [(p, m, True) for p, m in dirs]
    db = paths.state_db
    out += [(db.with_name(db.name + sfx), DB_FILE, False) for sfx in ("", "-wal", "-shm", "-journal")]
    ev = paths.events
    gens = sorted(ev.parent.glob(ev.name + ".*")) if ev.parent.is_dir() else []
    out += [(p, EVENTS_FILE, False) for p in [ev, *gens, paths.log_dir / "ds01d.log"]]
    return out


def enforce(paths: Paths, socket_dir: Path | None, warn: bool = True) -> list[str]:
    """Create the directories (missing ones), then give each path the daemon's uid/gid and its
    mode. Returns "path: old → new" for each change (logged as a warning: someone opened it).
    A symlink or a non-directory where a directory belongs stops the start (ConfigError).
    ``warn`` False: for files the daemon has just created (no one opened them)."""
    uid, gid = os.geteuid(), os.getegid()
    changed = []
    for path, mode, is_dir in layout(paths, socket_dir):
        if is_dir:
            path.mkdir(parents=True, exist_ok=True, mode=mode)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or (is_dir and not stat.S_ISDIR(st.st_mode)) or (
                not is_dir and not stat.S_ISREG(st.st_mode)):
            kind = "a directory" if is_dir else "a regular file"
            raise ConfigError(f"refusing to start: {path} is not {kind} (a symlink or something else)",
                              f"move it away; ds01d creates it with mode {mode:o}")
        old = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid, follow_symlinks=False)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)  # no symlink (checked above) in a directory only root can write
        if old != (uid, gid, mode):
            changed.append(f"{path}: {old[0]}:{old[1]} {old[2]:o} -> {uid}:{gid} {mode:o}")
    for line in changed if warn else []:
        log.warning("fixed the owner/mode of %s", line)
    return changed
