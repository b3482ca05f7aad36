"""An offline base image: Debian ``debootstrap --variant=minbase`` + python3/venv/pip, imported
with ``docker import`` (no registry involved). Runs in the daemon, as root.

Steps (``bootstrap`` yields one progress line per step and per debootstrap line):

1. ``debootstrap --variant=minbase --include=<PACKAGES> <suite> <tmp>/rootfs <mirror>``. The
   mirror comes from the host's own apt sources (the host's apt already works, so does this),
   falling back to deb.debian.org. Downloaded .debs are kept in ``cache_dir`` (debootstrap's
   ``--cache-dir``), so a re-bootstrap only downloads what changed; debootstrap verifies the
   cached files against the signed Release, so the cache can never serve a stale package.
2. The host's apt sources are copied into the rootfs when they name the same suite, so
   ``apt-get`` in user builds also sees the updates/security suites.
3. ``python3 -m venv /opt/venv`` inside the rootfs, made writable by everyone (``a+rwX``):
   containers run as the user's own uid, and ``pip install`` there must work without root
   (builds run as root and can install anyway). ``PATH`` puts ``/opt/venv/bin`` first, so
   ``python3``/``pip`` are the venv's, and Debian's "externally managed" system Python
   (PEP 668) is never touched.
4. apt lists and .debs are removed from the rootfs, and the tree is tarred (numeric owners) and
   imported with :func:`import_changes`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ds01.errors import BuildFailed, InvalidInput

PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
VENV = "/opt/venv"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def import_changes(venv: str = VENV, workdir: str = "/workspace", suite: str = "bookworm") -> list[str]:
    """The Dockerfile instructions ``docker import --change`` applies to the imported rootfs."""
    return [
        f"ENV PATH={venv}/bin:{BASE_PATH}",
        f"ENV VIRTUAL_ENV={venv}",
        "ENV LANG=C.UTF-8",
        "ENV PYTHONUNBUFFERED=1",
        f"WORKDIR {workdir}",
        'CMD ["/bin/bash"]',
        f'LABEL ds01.base=bootstrap ds01.suite={suite} org.opencontainers.image.description="DS01 offline base: '
        f'Debian {suite} minbase + python3 venv at {venv}"',
    ]


def mirror_from_sources(texts: list[str]) -> str | None:
    """The first Debian archive URI in apt sources: one-line (``deb URI suite comp``) or deb822
    (``URIs: …``) format. Security mirrors are skipped (debootstrap needs the main archive)."""
    for text in texts:
        for line in text.splitlines():
            s = line.strip()
            uris: list[str] = []
            if s.startswith("deb ") and not s.startswith("deb-src"):
                parts = [p for p in s.split()[1:] if not p.startswith("[")]
                # a bracketed option block may span several words: "[arch=amd64 signed-by=…]"
                parts = [p for p in parts if "=" not in p and not p.endswith("]")]
                uris = parts[:1]
            elif s.lower().startswith("uris:"):
                uris = s.split(":", 1)[1].split()
            for u in uris:
                if u.startswith(("http://", "https://")) and "security" not in u:
                    return u.rstrip("/")
    return None


def host_sources() -> list[str]:
    """The host's apt source files' texts (missing files are skipped)."""
    texts = []
    candidates = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for p in candidates:
        try:
            if p.is_file() and p.suffix in (".list", ".sources", ""):
                texts.append(p.read_text(errors="replace"))
        except OSError:
            pass
    return texts


def validate_suite(suite: str) -> str:
    if not SUITE_RE.match(suite or ""):
        raise InvalidInput(f"not a Debian suite name: {suite!r}", "e.g. bookworm or trixie")
    return suite


def _stream(cmd: list[str], what: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``cmd``, yielding its output lines; BuildFailed (with the last lines) on failure."""
    tail: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=env or {"PATH": BASE_PATH, "LANG": "C.UTF-8"})
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-20:]
        yield line
    if proc.wait() != 0:
        raise BuildFailed(f"{what} failed (exit {proc.returncode})", "the last lines above say why",
                          {"step": what, "tail": tail})


def _host_sources_for(suite: str) -> list[tuple[str, str]]:
    out = []
    for p in [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        try:
            text = p.read_text(errors="replace") if p.is_file() else ""
        except OSError:
            continue
        if re.search(rf"\b{re.escape(suite)}\b", text):
            out.append((p.name, text))
    return out


def build_rootfs(suite: str, workdir: Path, cache_dir: Path | None, mirror: str | None = None) -> Iterator[str]:
    """Steps 1-3 of the module doc into ``workdir/rootfs``; yields progress lines."""
    rootfs = workdir / "rootfs"
    mirror = mirror or mirror_from_sources(host_sources()) or DEFAULT_MIRROR
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd.append(f"--cache-dir={cache_dir}")
    cmd += [suite, str(rootfs), mirror]
    yield f"[1/4] debootstrap {suite} from {mirror} (a few minutes)"
    yield from _stream(cmd, "debootstrap")
    sources = _host_sources_for(suite)
    if sources:
        yield "[2/4] using the host's apt sources for " + suite
        (rootfs / "etc/apt/sources.list").write_text("")
        d = rootfs / "etc/apt/sources.list.d"
        d.mkdir(parents=True, exist_ok=True)
        for name, text in sources:
            (d / (name if name != "sources.list" else "host.list")).write_text(text)
    yield f"[3/4] creating the Python venv at {VENV}"
    yield from _stream(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", VENV], "creating the venv")
    yield from _stream(["chroot", str(rootfs), f"{VENV}/bin/python", "-m", "pip", "--version"], "checking pip")
    yield from _stream(["chmod", "-R", "a+rwX", str(rootfs) + VENV], "opening the venv to all users")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file():
                p.unlink()
    (rootfs / "workspace").mkdir(mode=0o755, exist_ok=True)


def tar_rootfs(workdir: Path) -> Path:
    """``rootfs`` → ``rootfs.tar`` with numeric owners (what ``docker import`` reads)."""
    out = workdir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(workdir / "rootfs"), "--numeric-owner", "-cf", str(out), "."],
                   check=True, capture_output=True)
    return out


def make_workdir(parent: Path | None = None) -> Path:
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(prefix="ds01-bootstrap-", dir=parent))


def cleanup(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)


def have_debootstrap() -> bool:
    return shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":" + BASE_PATH) is not None
