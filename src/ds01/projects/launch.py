"""Pure decisions for ``project-launch`` and ``container-retire`` (plus a tiny stamp file).

Change detection. The daemon labels every image it builds with ``ds01.content_hash``, a hash
over the Dockerfile, the whole build context, the base image ids and the build arguments, and
skips a build whose hash equals the label. Asking it means sending the build context, which is
most of the cost of an "unchanged" launch. So the CLI keeps its own *stamp* per project:

    {"hash": content_hash(Dockerfile, requirements.txt), "image_id": …, "workspace": …}

written after every build it ran or confirmed. A launch skips the build only when the stamp is
for this workspace, names the image that is there now, and has the current hash; and only when
the Dockerfile copies nothing into the image but ``requirements.txt`` (otherwise other files
decide the build too, and the daemon is asked). In every other case the daemon is asked, and it
still skips the build when nothing changed. ``--rebuild`` always asks the daemon.

Stamp files: ``ds01.projects.stamps`` (kept light for the fast path of an unchanged launch).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ds01.projects.stamps import REQUIREMENTS, file_signature, read_stamp, stamp_verdict, write_stamp  # noqa: F401 (file_signature)


# --------------------------------------------------------------------------- change detection


def client_hash(dockerfile_text: str, requirements: bytes | None) -> str:
    """``sha256:…`` over the Dockerfile and requirements.txt (the generator's content hash)."""
    from ds01.images.dockerfile_text import content_hash

    return content_hash(dockerfile_text, requirements)


def hash_covers_build(dockerfile_text: str) -> bool:
    """True when the Dockerfile takes nothing from the project but ``requirements.txt``, so that
    the Dockerfile and requirements.txt alone decide what gets built."""
    from ds01.images.dockerfile_text import logical_lines

    for ins in logical_lines(dockerfile_text):
        words = ins.split()
        if words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.lower().startswith("--from=") for w in words[1:]):
            continue  # from another stage or image, not from the project
        if ins.rstrip().endswith("]") or len(args) < 2:
            return False  # JSON form or something unusual: let the daemon decide
        if any(src.removeprefix("./") != REQUIREMENTS for src in args[:-1]):
            return False
    return True


@dataclass(frozen=True)
class Stamp:
    """What the CLI knew after the last build it ran or confirmed. ``files`` (size and mtime of
    the Dockerfile and requirements.txt) and ``covers`` let an unchanged launch skip reading and
    hashing them, like make; ``--rebuild`` always checks."""

    hash: str
    image_id: str
    workspace: str
    files: dict = field(default_factory=dict)
    covers: bool = False
    # the project's container still runs an earlier build of the image (a build from image-create
    # or image-update, or a replacement the user declined): launches ask the daemon again
    recheck: bool = False


@dataclass(frozen=True)
class BuildDecision:
    build: bool
    reason: str


def decide_build(image: Mapping[str, Any] | None, stamp: Stamp | None, current_hash: str, workspace: str,
                 covers: bool, rebuild: bool = False) -> BuildDecision:
    """Whether ``project-launch`` must (ask the daemon to) build. ``image`` is the daemon's view of
    the project image (``GET /v1/images/<project>``) or None when there is none. The stamp part
    is :func:`ds01.projects.stamps.stamp_verdict`, the fast path's decision too."""
    if image is None:
        return BuildDecision(True, "the project has no image yet")
    if rebuild:
        return BuildDecision(True, "--rebuild")
    why = stamp_verdict(asdict(stamp) if stamp is not None else None, workspace, lambda: (current_hash, covers),
                        image=dict(image))
    if why is not None:
        return BuildDecision(True, why)
    return BuildDecision(False, "nothing changed since the last build")


# --------------------------------------------------------------------------- stamp files (I/O)


def load_stamp(project: str) -> Stamp | None:
    """The stored stamp, or None when missing or unreadable (then the daemon is asked)."""
    data = read_stamp(project)
    try:
        return Stamp(str(data["hash"]), str(data["image_id"]), str(data["workspace"]),  # type: ignore[index]
                     dict(data.get("files") or {}), bool(data.get("covers", False)),  # type: ignore[union-attr]
                     bool(data.get("recheck", False)))  # type: ignore[union-attr]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def save_stamp(project: str, stamp: Stamp) -> None:
    """Best effort (see :func:`ds01.projects.stamps.write_stamp`)."""
    write_stamp(project, asdict(stamp))


# --------------------------------------------------------------------------- deploy results


def host_port(record: Mapping[str, Any], container_port: int) -> int | None:
    """The host port published for ``container_port`` in a container record. Accepts the shapes
    ``{"ports": {"8888": 49153}}``, ``{"ports": {"8888/tcp": …}}`` and ``{"ports": [{"container":
    8888, "host": 49153, …}]}`` / ``[[8888, "127.0.0.1", 49153]]``."""
    ports = record.get("ports")
    if isinstance(ports, Mapping):
        for k, v in ports.items():
            if str(k).split("/")[0] == str(container_port):
                return _port_value(v)
    elif isinstance(ports, list):
        for p in ports:
            if isinstance(p, Mapping) and str(p.get("container", p.get("container_port"))) == str(container_port):
                return _port_value(p.get("host", p.get("host_port")))
            if isinstance(p, (list, tuple)) and p and str(p[0]) == str(container_port):
                return _port_value(p[-1])
    return None


def _port_value(v: Any) -> int | None:
    if isinstance(v, Mapping):
        v = v.get("host_port", v.get("host", v.get("HostPort")))
    if isinstance(v, list) and v:
        return _port_value(v[0])
    try:
        port = int(v)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


# --------------------------------------------------------------------------- saved packages


IGNORED_PACKAGES = frozenset({"pip", "setuptools", "wheel", "distribute"})


def canonical(name: str) -> str:
    """PEP 503 name: ``Foo_Bar`` → ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class HandInstalled:
    """``add``: ``name==version`` to add to the Dockerfile; ``listed``: names that changed by hand
    but are already in the Dockerfile's managed block or requirements.txt (left to the user)."""

    add: list[str]
    listed: list[str]


def hand_installed(packages: Iterable[Mapping[str, Any]], since: float, known: Iterable[str]) -> HandInstalled:
    """Packages installed (or upgraded) inside the container after it was created.

    ``packages``: ``{"name", "version", "mtime"}`` per installed distribution, where ``mtime`` is
    that of its metadata folder: files from the image keep the image's times, anything pip writes
    in the container is newer than the container. ``since``: the container's creation time.
    ``known``: requirement names already in the managed block or requirements.txt."""
    known_c = {canonical(k) for k in known}
    add: dict[str, str] = {}
    listed: set[str] = set()
    for p in packages:
        name, version = str(p.get("name") or ""), str(p.get("version") or "")
        try:
            mtime = float(p.get("mtime") or 0)
        except (TypeError, ValueError):
            continue
        c = canonical(name)
        if not name or mtime <= since or c in IGNORED_PACKAGES:
            continue
        if c in known_c:
            listed.add(c)
        else:
            add[c] = f"{c}=={version}" if version else c
    return HandInstalled([add[k] for k in sorted(add)], sorted(listed))


def requirement_names(lines: Iterable[str]) -> list[str]:
    """Names of the requirements in requirements.txt lines or managed-block entries (options,
    comments, URLs and unparseable lines are skipped)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for line in lines:
        s = line.split("#", 1)[0].strip()
        if not s or s.startswith("-"):
            continue
        try:
            out.append(Requirement(s).name)
        except InvalidRequirement:
            continue
    return out
