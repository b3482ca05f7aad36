"""Reading a project's build context *as the user*, never as root.

The daemon (root) starts a short child process that has dropped to the user's uid/gid/groups
(like ``services.workspace``). The child walks ``<workspace base>/<project>``, writes the build
context as a tar stream to its stdout and, at the end, one JSON line to its stderr::

    {"ok": true, "digest": "sha256:…", "files": N, "bytes": N, "path": "…"}
    {"error": "<code>", "path": "…", …}      (the tar on stdout is then to be discarded)

so the kernel decides what the user may read. The child runs as the user, so the user can
tamper with it: the daemon trusts its report only for *refusals*. On success the daemon parses
the tar stream itself, re-packs it into a root-owned spool and takes the Dockerfile from there
(:class:`BuildContext`), so what is checked is exactly what is sent to the engine. Rules (documented in ``image-create --help``):

* The project directory must resolve inside the user's trust root (the home, or the configured
  workspace base) and contain a regular file ``Dockerfile``.
* A symlink whose target resolves outside the project directory is refused (``symlink``),
  naming the link, unless it is excluded (below). Links inside are kept as links.
* A file or directory the user cannot read is refused (``unreadable``).
* FIFOs, sockets and device files are skipped (reading a FIFO would hang the build).
* Excluded, in this order, later patterns winning: :data:`DEFAULT_EXCLUDES` (VCS data, caches
  and the data/model folders of the project scaffold: the workspace is mounted at /workspace
  when the container runs, so they never need to be in the image, and ``data/`` often holds
  symlinks to shared datasets), then the lines of ``.dockerignore``. Pattern syntax is a subset
  of Docker's: ``*`` and ``?`` within one path component, ``**`` across components, a leading
  ``!`` re-includes, a leading ``/`` is ignored, ``#`` starts a comment. A pattern matching a
  directory excludes everything below it. ``Dockerfile`` is always included.
* Total file size over ``max_bytes`` is refused (``too_big``) *before* any tar byte is
  written, with the largest top-level entries so the user knows what to ``.dockerignore``.

The ``digest`` covers every entry's path, type, permission bits, link target and content (not
mtimes or owners), so two contexts with equal digests build equal images.

The functions above ``child_main`` are pure or only read the filesystem; they are imported in
the child with the standard library alone (no site-packages), so keep this module's imports
stdlib-only and light (no dataclasses/typing: the child's start-up time is part of every build).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import tarfile

DEFAULT_EXCLUDES: tuple[str, ...] = (
    "**/.git",
    "**/.hg",
    "**/.svn",
    "**/__pycache__",
    "**/.ipynb_checkpoints",
    "**/.DS_Store",
    ".cache",
    ".venv",
    "venv",
    "data",
    "datasets",
    "models",
    "checkpoints",
    "outputs",
    "logs",
    "wandb",
    "mlruns",
    "node_modules",
)
DOCKERFILE = "Dockerfile"
MAX_DOCKERFILE = 256 * 1024


# --------------------------------------------------------------------------- patterns


class Pattern:
    """One compiled line; ``prefix`` is its literal part before the first wildcard (to decide
    whether an excluded directory must still be entered)."""

    __slots__ = ("negate", "regex", "prefix")

    def __init__(self, negate: bool, regex: re.Pattern[str], prefix: str):
        self.negate, self.regex, self.prefix = negate, regex, prefix


def _to_regex(pat: str) -> str:
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


def parse_patterns(lines: list[str] | tuple[str, ...]) -> list[Pattern]:
    """Compile ``.dockerignore``-style lines (see the module doc for the subset supported)."""
    out = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:].strip() if negate else line
        line = os.path.normpath(line.lstrip("/")) if line.lstrip("/") else ""
        if not line or line == ".":
            continue
        prefix = re.split(r"[*?\[]", line, maxsplit=1)[0]
        out.append(Pattern(negate, re.compile(_to_regex(line) + "$"), prefix))
    return out


def is_excluded(rel: str, patterns: list[Pattern]) -> bool:
    """Last matching pattern wins; a pattern also matches everything below a matched directory."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for p in patterns:
        if any(p.regex.match(c) for c in candidates):
            excluded = not p.negate
    return excluded


def may_reinclude_below(rel_dir: str, patterns: list[Pattern]) -> bool:
    """Could a ``!`` pattern re-include something inside the excluded directory ``rel_dir``?"""
    d = rel_dir + "/"
    return any(p.negate and (p.prefix.startswith(d) or d.startswith(p.prefix) or "**" in p.prefix)
               for p in patterns)


# --------------------------------------------------------------------------- the walk


class ContextRefused(Exception):
    def __init__(self, code: str, **info: object):
        super().__init__(code)
        self.code = code
        self.info = info


class Entry:
    """One thing to send: ``kind`` is file | dir | symlink."""

    __slots__ = ("rel", "kind", "size", "mode", "link")

    def __init__(self, rel: str, kind: str, size: int = 0, mode: int = 0o644, link: str = ""):
        self.rel, self.kind, self.size, self.mode, self.link = rel, kind, size, mode, link


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def scan(root: str, patterns: list[Pattern]) -> list[Entry]:
    """Every entry to send, sorted (deterministic tars). ``root`` must be a resolved path.
    Raises ContextRefused for a symlink out of ``root`` or an unreadable file/directory."""
    entries: list[Entry] = []

    def walk(rel_dir: str) -> None:
        path = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(path) as it:
                items = sorted(it, key=lambda e: e.name)
        except PermissionError:
            raise ContextRefused("unreadable", path=rel_dir or ".") from None
        for de in items:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            excluded = is_excluded(rel, patterns) and rel != DOCKERFILE
            st = de.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if excluded and not may_reinclude_below(rel, patterns):
                    continue
                if not excluded:
                    entries.append(Entry(rel, "dir", mode=stat.S_IMODE(st.st_mode)))
                walk(rel)
            elif excluded:
                continue
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(de.path)
                real = os.path.realpath(de.path)
                if not _inside(real, root):
                    raise ContextRefused("symlink", path=rel, target=target, real=real)
                entries.append(Entry(rel, "symlink", link=target))
            elif stat.S_ISREG(st.st_mode):
                if not os.access(de.path, os.R_OK):
                    raise ContextRefused("unreadable", path=rel)
                entries.append(Entry(rel, "file", size=st.st_size, mode=stat.S_IMODE(st.st_mode)))
            # FIFOs, sockets, devices: skipped on purpose (see the module doc)

    walk("")
    return entries


def largest(entries: list[Entry], n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` biggest top-level entries by total file size (for the too-big message)."""
    sizes: dict[str, int] = {}
    for e in entries:
        top = e.rel.split("/", 1)[0]
        sizes[top] = sizes.get(top, 0) + e.size
    return sorted(sizes.items(), key=lambda kv: -kv[1])[:n]


def write_tar(root: str, entries: list[Entry], out) -> str:
    """Write ``entries`` as a tar stream to the binary file ``out``; return the content digest.

    Files are opened with O_NOFOLLOW and re-checked with fstat, so a file swapped for a symlink
    after the scan is refused instead of followed."""
    h = hashlib.sha256()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            ti = tarfile.TarInfo(e.rel)
            ti.uid = ti.gid = 0
            ti.mode = e.mode
            h.update(f"{e.kind}\0{e.rel}\0{e.mode:o}\0{e.link}\0".encode("utf-8", "surrogateescape"))
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif e.kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, e.link
                tar.addfile(ti)
            else:
                _add_file(tar, ti, os.path.join(root, e.rel), e.rel, h)
    return "sha256:" + h.hexdigest()


class _Hashing:
    def __init__(self, f, h, size: int):
        self.f, self.h, self.left = f, h, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.h.update(data)
        self.left -= len(data)
        return data


def _add_file(tar: tarfile.TarFile, ti: tarfile.TarInfo, path: str, rel: str, h) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise ContextRefused("unreadable", path=rel) from None
    except OSError:  # ELOOP: became a symlink since the scan
        raise ContextRefused("changed", path=rel) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContextRefused("changed", path=rel)
        ti.size, ti.mtime = st.st_size, int(st.st_mtime)
        h.update(st.st_size.to_bytes(8, "big"))
        try:
            tar.addfile(ti, _Hashing(f, h, st.st_size))
        except OSError:  # shrank while being read
            raise ContextRefused("changed", path=rel) from None


def child_main(argv: list[str]) -> int:
    """Entry point in the child (already running as the user). argv: trust_root, base,
    project, max_bytes. Tar on stdout, one JSON line on stderr."""
    trust_root, base, project, max_bytes = argv[0], argv[1], argv[2], int(argv[3])

    def report(**kw: object) -> int:
        sys.stderr.write(json.dumps(kw) + "\n")
        sys.stderr.flush()
        return 0

    try:
        real_root = os.path.realpath(trust_root)
        real = os.path.realpath(os.path.join(base, project))
        if not _inside(real, real_root):
            return report(error="outside", path=os.path.join(base, project), real=real, root=real_root)
        if not os.path.isdir(real):
            return report(error="missing", path=real)
        df = os.path.join(real, DOCKERFILE)
        if os.path.islink(df) or not os.path.isfile(df):
            return report(error="no_dockerfile", path=df)
        with open(df, "rb") as f:
            dockerfile = f.read(MAX_DOCKERFILE + 1)
        if len(dockerfile) > MAX_DOCKERFILE:
            return report(error="dockerfile_too_big", path=df, limit=MAX_DOCKERFILE)
        ignore: list[str] = []
        di = os.path.join(real, ".dockerignore")
        if os.path.isfile(di) and not os.path.islink(di):
            with open(di, encoding="utf-8", errors="replace") as f:
                ignore = f.read(1024 * 1024).splitlines()
        entries = scan(real, parse_patterns(list(DEFAULT_EXCLUDES) + ignore))
        total = sum(e.size for e in entries)
        if total > max_bytes:
            return report(error="too_big", bytes=total, limit=max_bytes, largest=largest(entries))
        digest = write_tar(real, entries, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return report(ok=True, digest=digest, files=sum(e.kind == "file" for e in entries), bytes=total, path=real)
    except ContextRefused as e:
        return report(error=e.code, **e.info)
    except PermissionError as e:
        return report(error="unreadable", path=getattr(e, "filename", None) or "?")
    except OSError as e:
        return report(error="os", path=getattr(e, "filename", None) or "?", msg=e.strerror or str(e))


# --------------------------------------------------------------------------- stat fingerprint (daemon side)
#
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
        if not _inside(real, real_root) or _mounts_below(real):
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


# --------------------------------------------------------------------------- daemon side


class BuildContext:
    """A context read by the child and re-packed by the daemon.

    Nothing the child *says* is trusted for a decision: its tar stream is parsed here, every
    member is copied into a root-owned spool (``tar``) except ``Dockerfile``, whose bytes are held
    back (``dockerfile``, the exact text the checks see). :meth:`seal` then appends the Dockerfile
    the daemon decided to build (checked and rewritten) and rewinds the spool, so the engine gets
    exactly the bytes that were checked; a file the user swaps while the child reads it changes
    nothing. ``digest``/``files``/``bytes`` are computed here from what was copied (the
    Dockerfile is not part of ``digest``: the content hash covers the rewritten text)."""

    def __init__(self, tar, writer, digest: str, files: int, bytes: int, dockerfile: str, path: str):
        self.tar, self._writer, self.digest, self.files, self.bytes = tar, writer, digest, files, bytes
        self.dockerfile, self.path = dockerfile, path

    def seal(self, dockerfile: str) -> None:
        """Append ``dockerfile`` as the context's only ``Dockerfile`` and rewind ``tar``."""
        import io

        data = dockerfile.encode("utf-8")
        ti = tarfile.TarInfo(DOCKERFILE)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
        self._writer.addfile(ti, io.BytesIO(data))
        self._writer.close()
        self.tar.seek(0)


_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from ds01.images.context import child_main; "
          "sys.exit(child_main(sys.argv[2:]))")


class _Overflow(Exception):
    pass


class _Bad(Exception):
    """The child's tar is not what the child writes (malformed or tampered with)."""


class _Counting:
    """The child's stdout, counted: raises _Overflow past ``cap`` bytes."""

    def __init__(self, f, cap: int):
        self.f, self.cap, self.total = f, cap, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n is not None and n >= 0 else 1024 * 1024)
        self.total += len(data)
        if self.total > self.cap:
            raise _Overflow()
        return data


def _repack(src, out_tar, max_bytes: int) -> tuple[bytes | None, str, int, int]:
    """Copy the members of the tar stream ``src`` into the tarfile writer ``out_tar`` with clean
    headers, holding back ``Dockerfile``. Returns (Dockerfile bytes or None, digest, files, bytes).
    Raises _Bad for anything the child never writes (links out of place, devices, hard links,
    ``..``, a second Dockerfile, …) and _Overflow past ``max_bytes`` of file data."""
    import posixpath

    h = hashlib.sha256()
    dockerfile: bytes | None = None
    seen_df = False
    files = total = 0
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=src, mode="r|") as tin:
            for m in tin:
                name = posixpath.normpath(m.name.lstrip("/"))
                if name in (".", "") or name == ".." or name.startswith("../") or name in names:
                    raise _Bad(m.name)
                names.add(name)
                if name == DOCKERFILE:
                    if seen_df or not m.isreg() or m.size > MAX_DOCKERFILE:
                        raise _Bad(m.name)
                    seen_df = True
                    f = tin.extractfile(m)
                    dockerfile = f.read(MAX_DOCKERFILE + 1) if f else b""
                    continue
                if name.startswith(DOCKERFILE + "/"):
                    raise _Bad(m.name)
                ti = tarfile.TarInfo(name)
                ti.mode, ti.mtime = m.mode & 0o7777, int(m.mtime)
                if m.isdir():
                    kind = "dir"
                    ti.type = tarfile.DIRTYPE
                elif m.issym():
                    kind = "symlink"
                    ti.type, ti.linkname = tarfile.SYMTYPE, m.linkname
                elif m.isreg():
                    kind = "file"
                else:
                    raise _Bad(m.name)
                h.update(f"{kind}\0{name}\0{ti.mode:o}\0{ti.linkname}\0".encode("utf-8", "surrogateescape"))
                if kind != "file":
                    out_tar.addfile(ti)
                    continue
                total += m.size
                if total > max_bytes:
                    raise _Overflow()
                files += 1
                ti.size = m.size
                h.update(m.size.to_bytes(8, "big"))
                f = tin.extractfile(m)
                out_tar.addfile(ti, _Hashing(f, h, m.size))
    except (tarfile.TarError, EOFError, OSError, UnicodeError, ValueError) as e:
        raise _Bad(str(e)) from None
    return dockerfile, "sha256:" + h.hexdigest(), files, total


def read_context(uid: int, gid: int, groups: list[int], trust_root: str, base: str, project: str,
                 max_bytes: int, timeout: float = 600) -> BuildContext:
    """Run the child as ``uid``/``gid``/``groups``, re-pack its tar into a daemon-owned spool
    (see :class:`BuildContext`; call ``seal`` before sending it). Raises the DS01Error that
    matches the child's refusal (see :func:`refusal_error`)."""
    import subprocess
    import tempfile
    import threading

    from ds01.errors import DS01Error, InvalidInput

    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tar = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)
    writer = tarfile.open(fileobj=tar, mode="w|", format=tarfile.PAX_FORMAT)
    err = tempfile.TemporaryFile()
    # Headroom for tar headers/padding on top of the file bytes the child already capped.
    cap = max_bytes + 64 * 1024 * 1024
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CHILD, pkg_parent, trust_root, base, project, str(max_bytes)],
            user=uid, group=gid, extra_groups=groups, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            cwd="/", env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except OSError as e:
        tar.close()
        raise DS01Error(f"could not start reading the build context: {e}") from None
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    src = _Counting(proc.stdout, cap)
    overflow = bad = False
    dockerfile, digest, files, total = None, "", 0, 0
    try:
        try:
            dockerfile, digest, files, total = _repack(src, writer, max_bytes)
            while src.read(1024 * 1024):  # the end-of-archive padding; lets the child exit
                pass
        except _Overflow:
            overflow = True
            proc.kill()
        except _Bad:
            bad = True
            try:
                while src.read(1024 * 1024):
                    pass
            except _Overflow:
                proc.kill()
        proc.wait()
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    err.seek(0)
    lines = err.read(64 * 1024).decode("utf-8", "replace").strip().splitlines()
    err.close()
    try:
        res = json.loads(lines[-1]) if lines else {}
    except ValueError:
        res = {}
    if not isinstance(res, dict):
        res = {}
    if overflow:
        res = {"error": "too_big", "bytes": max(src.total, total), "limit": max_bytes, "largest": []}
    elif res.get("ok") and (bad or proc.returncode != 0):
        res = {"error": "crashed", "msg": "the build context stream was malformed"}
    if not res.get("ok"):
        tar.close()
        raise refusal_error(res or {"error": "crashed", "msg": "\n".join(lines[-3:]) or f"exit {proc.returncode}"},
                            project)
    if dockerfile is None:
        tar.close()
        raise refusal_error({"error": "no_dockerfile", "path": os.path.join(str(res.get("path", "?")), DOCKERFILE)},
                            project)
    try:
        text = dockerfile.decode("utf-8")
    except UnicodeDecodeError:
        tar.close()
        raise InvalidInput("the Dockerfile is not UTF-8 text", "save it as UTF-8") from None
    return BuildContext(tar=tar, writer=writer, digest=digest, files=files, bytes=total, dockerfile=text,
                        path=str(res.get("path", "")))


def refusal_error(res: dict, project: str):
    """Map the child's ``{"error": code, …}`` to the DS01Error the user sees."""
    from ds01.errors import DS01Error, InvalidInput, NotFound, PermissionDenied, PolicyDenied

    code, path = res.get("error"), res.get("path", "?")
    if code == "symlink":
        return PermissionDenied(
            f"the build context contains a symlink that leaves the project: {path} -> {res.get('target')}",
            "builds only read files inside the project; copy what you need into the project, "
            "or list the link in .dockerignore",
            {"path": path, "target": res.get("target")})
    if code == "unreadable":
        return PermissionDenied(f"you cannot read {path} in the build context",
                                "fix its permissions (chmod u+r) or list it in .dockerignore", {"path": path})
    if code == "outside":
        return PermissionDenied(f"the project {res.get('path')} resolves to {res.get('real')}, outside {res.get('root')}",
                                "workspaces must really live inside your home")
    if code == "missing":
        return NotFound(f"project {project!r} has no workspace ({path})",
                        f"create it with 'image-create {project}' or 'dir-create {project}'")
    if code == "no_dockerfile":
        return NotFound(f"project {project!r} has no Dockerfile ({path})",
                        f"write one with 'image-create {project}'")
    if code == "dockerfile_too_big":
        return InvalidInput(f"the Dockerfile is larger than {res.get('limit')} bytes")
    if code == "too_big":
        from ds01.units import format_size

        big = ", ".join(f"{name} ({format_size(size)})" for name, size in res.get("largest") or [])
        return PolicyDenied(
            f"the build context is {format_size(int(res.get('bytes', 0)))}, over the limit of "
            f"{format_size(int(res.get('limit', 0)))}",
            "list big folders in the project's .dockerignore (the workspace is mounted at /workspace "
            "anyway, so data need not be in the image)" + (f"; largest: {big}" if big else ""),
            {"largest": res.get("largest") or []})
    if code == "changed":
        return DS01Error(f"{path} changed while the build context was read", "run the build again")
    return DS01Error(f"could not read the build context: {res.get('msg') or code} ({path})")
