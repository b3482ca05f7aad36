"""An offline base image: Debian ``debootstrap --variant=minbase`` + python3/venv/pip and the
tools of a shell (git, curl, ssh, less, vim-tiny, ps), imported
with ``docker import`` (no registry involved). Runs in the daemon, as root.

Steps (``bootstrap`` yields one progress line per step and per debootstrap line):

1. ``debootstrap --variant=minbase --include=<PACKAGES> <suite> <tmp>/rootfs <mirror>``. The
   mirror comes from the host's own apt sources (the host's apt already works, so does this),
   falling back to deb.debian.org. Downloaded .debs are kept in ``cache_dir`` (debootstrap's
   ``--cache-dir``), so a re-bootstrap only downloads what changed; debootstrap verifies the
   cached files against the signed Release, so the cache can never serve a stale package.
2. ``/etc/apt/sources.list.d/debian.sources`` in the rootfs names the same mirror with the
   ``-updates`` and (from the host's sources) ``-security`` suites, so ``apt-get`` in user builds
   gets fixes. Only Debian archives are taken from the host; third-party repositories are not.
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

# openssh-server/-sftp-server: container-ssh runs the image's own sshd, unprivileged, in inetd mode
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "openssh-server", "openssh-sftp-server")
# What people expect in a shell (the default images.tools; all in Debian main, so debootstrap gets
# them from the same mirror): builds on this base then need no network for them.
TOOLS = ("git", "curl", "openssh-client", "less", "vim-tiny", "procps")
VENV = "/opt/venv"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]{1,31}\Z")
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


def mirrors_from_sources(texts: list[str]) -> tuple[str | None, str | None]:
    """(main archive, security archive): the first Debian URIs in apt sources, one-line
    (``deb [opts] URI suite comp``) or deb822 (``URIs: …``) format. Only URIs whose path ends in
    ``/debian`` or ``/debian-security`` count, so third-party repositories are ignored."""
    main = security = None
    for text in texts:
        for line in text.splitlines():
            s = re.sub(r"\[[^\]]*\]", " ", line.strip())  # drop "[arch=… signed-by=…]"
            uris: list[str] = []
            if s.startswith("deb "):
                uris = s.split()[1:2]
            elif s.lower().startswith("uris:"):
                uris = s.split(":", 1)[1].split()
            for u in uris:
                u = u.rstrip("/")
                if not u.startswith(("http://", "https://")):
                    continue
                if u.endswith("/debian-security") and security is None:
                    security = u
                elif u.endswith("/debian") and main is None:
                    main = u
    return main, security


def apt_sources(suite: str, mirror: str, security: str | None) -> str:
    """The image's /etc/apt/sources.list.d/debian.sources: the suite, its updates and (when the
    host has one, or for the default mirror) its security archive, so builds get fixes."""
    security = security or (DEFAULT_MIRROR + "-security" if mirror == DEFAULT_MIRROR else None)
    out = (f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
           "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    if security:
        out += (f"\nTypes: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return out


def host_sources() -> list[str]:
    """The texts of the host's apt source files (unreadable ones are skipped)."""
    texts = []
    for p in [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        try:
            if p.is_file():
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


def build_rootfs(suite: str, workdir: Path, cache_dir: Path | None, mirror: str | None = None) -> Iterator[str]:
    """Steps 1-3 of the module doc into ``workdir/rootfs``; yields progress lines."""
    rootfs = workdir / "rootfs"
    host_main, host_security = mirrors_from_sources(host_sources())
    mirror = mirror or host_main or DEFAULT_MIRROR
    cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES + TOOLS)}"]
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd.append(f"--cache-dir={cache_dir}")
    cmd += [suite, str(rootfs), mirror]
    yield f"[1/4] debootstrap {suite} from {mirror} (a few minutes)"
    yield from _stream(cmd, "debootstrap")
    yield f"[2/4] apt sources: {suite}, {suite}-updates" + (", security" if host_security else "")
    (rootfs / "etc/apt/sources.list").write_text("")
    d = rootfs / "etc/apt/sources.list.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / "debian.sources").write_text(apt_sources(suite, mirror, host_security if mirror == host_main else None))
    yield f"[3/4] creating the Python venv at {VENV}"
    yield from _stream(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", VENV], "creating the venv")
    yield from _stream(["chroot", str(rootfs), f"{VENV}/bin/python", "-m", "pip", "--version"], "checking pip")
    yield from _stream(["chmod", "-R", "a+rwX", str(rootfs) + VENV], "opening the venv to all users")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file():
                p.unlink()
    for p in (rootfs / "etc/ssh").glob("ssh_host_*"):  # one image, many containers: never shared host keys
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
