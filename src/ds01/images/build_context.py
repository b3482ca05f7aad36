"""Reading a project's build context, daemon side: start the child that reads it as the user
(``ds01.images.context``), parse its tar stream and re-pack it into a root-owned spool, so what is
checked is exactly what is sent to the engine (:class:`BuildContext`); map the child's refusals
to the errors the user sees (:func:`refusal_error`)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile

from ds01.images.context import DOCKERFILE, MAX_DOCKERFILE, HashingReader


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
                out_tar.addfile(ti, HashingReader(f, h, m.size))
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

    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # src/
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
