"""The stat fingerprint of a build context (daemon side, as root): "nothing changed since the
last build" from metadata alone, without reading the context as the user (see below)."""

from __future__ import annotations

import hashlib
import os
import re
import stat

from ds01.images.context import DEFAULT_EXCLUDES, DOCKERFILE, inside, is_excluded, parse_patterns

# A no-op rebuild should not pay for a child process and a full read of the context. Like
# BuildKit's context transfer (which re-sends only files whose stat changed) and git's index, the
# daemon compares *metadata* with what it recorded at the last build: every entry's path, type,
# mode, owner, size, mtime, ctime and inode (ctime cannot be set by the user, and changes on every
# write, chmod, chown or rename). Root only looks, never reads a file of the user's, walking with
# directory fds and O_NOFOLLOW so a symlink swapped in cannot take it elsewhere. It vouches for
# nothing unusual: any error, anything not owned as expected, or a file changed in the last
# ``racy_s`` seconds (timestamps are coarse: an edit within the same tick would keep them) gives
# None, and the full read as the user decides, as before.

_DEFAULT_PATTERNS = parse_patterns(DEFAULT_EXCLUDES)  # fixed, so safe to match as root
FP_MAX_ENTRIES = 20_000  # more: the full read decides (a context that big is read anyway)
FP_MAX_DEPTH = 64


class _NoVouch(Exception):
    pass


def _check_root_ignore(dirfd: int, uid: int) -> None:
    """The user's ``.dockerignore`` is never compiled as root (a crafted glob can make a regex
    backtrack for minutes, and the daemon must not stall): the walk covers everything outside
    the default excludes, a superset of what is sent, and ``.dockerignore`` itself is part of it.
    That is exact unless a ``!`` line re-includes something from a default-excluded folder:
    then no vouching."""
    try:
        pre = os.stat(".dockerignore", dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError:
        raise _NoVouch from None
    # only the user's own plain file (not a hard link to something else) is ever opened
    if not stat.S_ISREG(pre.st_mode) or pre.st_uid != uid or pre.st_nlink != 1 or pre.st_size > 1024 * 1024:
        raise _NoVouch
    try:
        fd = os.open(".dockerignore", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        raise _NoVouch from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (pre.st_dev, pre.st_ino):
            raise _NoVouch
        # Any "!" at all, not just at a line start: line splitting and whitespace here need not
        # match the reader's (form feeds, Unicode spaces), and being stricter is always safe.
        if b"!" in f.read(1024 * 1024 + 1):
            raise _NoVouch


def _mounts_below(path: str) -> bool:
    """Is anything mounted inside ``path``? (a FUSE mount a user made could hang root's stat)"""
    prefix = path.rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) <= 4:
                    continue
                # mount points are octal-escaped (\\040 for a space, …)
                mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if mp.startswith(prefix):
                    return True
    except OSError:
        return True
    return False


def stat_fingerprint(trust_root: str, base: str, project: str, uid: int, racy_s: float = 2.0) -> str | None:
    """``sha256:…`` over the metadata of every entry outside :data:`DEFAULT_EXCLUDES` (a superset
    of what :func:`scan` sends, see :func:`_check_root_ignore`), or None when it cannot vouch for
    them (see above). Runs as root in the daemon; bounded (entries, depth); reads no file content
    except a scan of the user's own ``.dockerignore`` for ``!`` lines."""
    import time

    start = time.time_ns()
    limit = start - int(racy_s * 1e9)
    try:
        real_root = os.path.realpath(trust_root)
        real = os.path.realpath(os.path.join(base, project))
        if not inside(real, real_root) or _mounts_below(real):
            return None
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    h = hashlib.sha256()
    count = 0

    def walk(dirfd: int, rel_dir: str, depth: int = 0) -> None:
        nonlocal count
        if depth > FP_MAX_DEPTH:
            raise _NoVouch
        items = []
        with os.scandir(dirfd) as it:
            for de in it:  # counted while listing: a directory of millions never sits in memory
                count += 1
                if count > FP_MAX_ENTRIES:
                    raise _NoVouch
                items.append(de)
        items.sort(key=lambda e: e.name)
        for de in items:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            # the defaults have no "!" lines (and a .dockerignore with one is declined): an excluded
            # directory never has anything re-included below it
            if is_excluded(rel, _DEFAULT_PATTERNS) and rel != DOCKERFILE:
                continue
            st = de.stat(follow_symlinks=False)
            if st.st_dev != dev:
                raise _NoVouch  # another filesystem mounted in the project
            if stat.S_ISDIR(st.st_mode):
                h.update(f"d\0{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\n".encode("utf-8", "surrogateescape"))
                sub = os.open(de.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
                try:
                    walk(sub, rel, depth + 1)
                finally:
                    os.close(sub)
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue  # FIFOs, sockets, devices: skipped by scan too
            if max(st.st_mtime_ns, st.st_ctime_ns) >= limit:
                raise _NoVouch  # racily clean: it may change again within the same timestamp
            link = os.readlink(de.name, dir_fd=dirfd) if stat.S_ISLNK(st.st_mode) else ""
            h.update(f"{'l' if link else 'f'}\0{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{link}\n".encode("utf-8", "surrogateescape"))

    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            return None
        dev = st.st_dev
        _check_root_ignore(fd, uid)
        walk(fd, "")
    except (_NoVouch, OSError):
        return None
    finally:
        os.close(fd)
    return "sha256:" + h.hexdigest()
