"""Names users type and names DS01 derives: pure validation, no I/O."""

from __future__ import annotations

import re

from ds01.errors import InvalidInput

# \Z, not $: '$' also matches before a trailing newline ('evil\n' would pass)
PROJECT_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")


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


def image_name(user: str, project: str) -> str:
    """Repository for a user's project image (Docker repositories must be lowercase)."""
    safe_user = re.sub(r"[^a-z0-9_.-]", "-", user.lower()).strip("-.") or "user"
    return f"ds01/{safe_user}/{project}"
