"""The stamp files of ``project-launch`` (see ``ds01.projects.launch`` for what a stamp means).

Standard library and os.path only: the fast path of an unchanged launch reads a stamp and two
``stat`` results without importing pathlib or dataclasses.

Stamps live in ``$XDG_STATE_HOME/ds01/launch/<project>.json`` (default ``~/.local/state``), never
in the workspace, so they are not part of the user's git repository.
"""

from __future__ import annotations

import json
import os

REQUIREMENTS = "requirements.txt"


def stamp_dir() -> str:
    from ds01.projects.workspace import current_user

    base = os.environ.get("XDG_STATE_HOME") or os.path.join(current_user()[1], ".local", "state")
    return os.path.join(base, "ds01", "launch")


def read_stamp(project: str) -> dict | None:
    """The stored stamp as a dict, or None when missing or unreadable (then the daemon is asked)."""
    try:
        with open(os.path.join(stamp_dir(), f"{project}.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_stamp(project: str, data: dict) -> None:
    """Best effort: a stamp that cannot be written only costs a check at the next launch."""
    d = stamp_dir()
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        tmp = os.path.join(d, f".{project}.json.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, os.path.join(d, f"{project}.json"))
    except OSError:
        pass


def mark_recheck(project: str, on: bool = True) -> None:
    """Flag (or clear) "the container may run an earlier build of the image" in the stamp, so
    the next launch asks the daemon instead of reusing the container blindly (best effort)."""
    data = read_stamp(project)
    if data is None or bool(data.get("recheck")) == on:
        return
    data["recheck"] = on
    write_stamp(project, data)


def file_signature(workspace: str) -> dict[str, list[int] | None]:
    """Size and mtime (ns) of the files the hash covers; None for a missing requirements.txt."""
    out: dict[str, list[int] | None] = {}
    for name in ("Dockerfile", REQUIREMENTS):
        try:
            st = os.stat(os.path.join(workspace, name))
            out[name] = [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            out[name] = None
    return out


def stamp_verdict(stamp: dict | None, workspace: str, current, *, signature: dict | None = None,
                  image: dict | None = None) -> str | None:
    """The one "nothing changed" decision of ``project-launch`` (its fast path and its click path
    both come here): None when the stamp shows the image is current, else why it must be checked.

    ``current()`` gives ``(content hash, hash covers the build)`` of the Dockerfile and
    requirements.txt now; it is only called when ``signature`` (their size and mtime now, see
    :func:`file_signature`) does not settle it, like make. ``image``: the daemon's view of the
    project image when it was asked (its id must be the stamp's); None when it was not (a deploy
    by name then finds out)."""
    if stamp is None or stamp.get("workspace") != workspace:
        return "first launch from this account: checking the image is current"
    if image is None and stamp.get("recheck"):
        return "the image was rebuilt since the container was made: checking it"
    if image is not None and stamp.get("image_id") != image.get("id"):
        return "the image was rebuilt or replaced since the last launch: checking it"
    if signature is not None and stamp.get("covers") and stamp.get("files") and stamp["files"] == signature:
        return None
    digest, covers = current()
    if stamp.get("hash") != digest:
        return "the Dockerfile or requirements.txt changed since the last build"
    if not covers:
        return "the Dockerfile copies project files: checking them"
    return None
