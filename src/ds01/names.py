"""Names users type and names DS01 derives: pure validation, no I/O."""

from __future__ import annotations

import re

from ds01.errors import InvalidInput

# \Z, not $: '$' also matches before a trailing newline ('evil\n' would pass)
PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
# one path component of a Docker repository (the distribution reference grammar)
_REPO_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_UID_NAMESPACE = re.compile(r"u\.[0-9]+\Z")


def validate_project(name: object) -> str:
    """A project name is ``[a-z0-9][a-z0-9_.-]{0,62}``: it becomes a directory and part of a
    Docker name, so anything that could traverse paths (``..``, ``/``) is refused."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("a project name is required", "e.g. 'container-create thesis'")
    if not PROJECT_RE.match(name) or ".." in name:
        shown = name if len(name) <= 70 else name[:67] + "..."
        raise InvalidInput(
            f"invalid project name {shown!r}",
            "use 1-63 characters: lowercase letters, digits, '_', '.', '-', starting with a letter or digit (no '..')",
        )
    return name


def container_name(prefix: str, uid: int, project: str) -> str:
    """Docker name for (uid, project). The uid (not the user name) keeps it unambiguous:
    'ds01-1001-thesis' can only belong to uid 1001's project 'thesis'."""
    return f"{prefix}-{uid}-{project}"


def image_namespace(user: str, uid: int | None = None) -> str:
    """A user's image namespace, one-to-one so that no user can build into another's.

    A name that already is a valid repository component is used as it is (existing images keep
    their names); any other name (``alice-``, ``Bob``, ``a..b``), and any name shaped like the
    fallback itself, maps to ``u.<uid>``, which the uid makes unique. (The old lossy mapping
    sent ``alice-`` to ``alice``: that user's build moved alice's tag onto their own image.)"""
    if _REPO_COMPONENT.match(user) and not _UID_NAMESPACE.match(user):
        return user
    if uid is None:
        raise ValueError(f"the user name {user!r} needs its uid to name an image namespace")
    return f"u.{int(uid)}"


def image_name(user: str, project: str, uid: int | None = None) -> str:
    """Repository of a user's project image: ``ds01/<namespace>/<project>``."""
    return f"ds01/{image_namespace(user, uid)}/{project}"
