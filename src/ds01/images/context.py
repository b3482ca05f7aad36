"""Reading a project's build context *as the user*, never as root.

The daemon (root) starts a short child process that has dropped to the user's uid/gid/groups
(like ``services.workspace``). The child walks ``<workspace base>/<project>``, writes the build
context as a tar stream to its stdout and, at the end, one JSON line to its stderr::

    {"ok": true, "digest": "sha256:…", "files": N, "bytes": N, "path": "…"}
    {"error": "<code>", "path": "…", …}      (the tar on stdout is then to be discarded)

so the kernel decides what the user may read. The child runs as the user, so the user can
tamper with it: the daemon trusts its report only for *refusals*. On success the daemon parses
the tar stream itself, re-packs it into a root-owned spool and takes the Dockerfile from there
(``build_context.BuildContext``), so what is checked is exactly what is sent to the engine. Rules (documented in ``image-create --help``):

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

This module is what the child runs: it is imported there with the standard library alone (no
site-packages), so keep its imports stdlib-only and light (no dataclasses/typing: the child's
start-up time is part of every build). The daemon side (start the child, re-pack its tar) is
``ds01.images.build_context``; the metadata-only check for "nothing changed" is
``ds01.images.fingerprint``.
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


def inside(path: str, root: str) -> bool:
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
                if not inside(real, root):
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


class HashingReader:
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
            tar.addfile(ti, HashingReader(f, h, st.st_size))
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
        if not inside(real, real_root):
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
