"""Dockerfile text helpers with no heavy imports (the CLI uses them on every launch):
instruction splitting as Docker does it, and the content hash that decides "nothing changed"."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ds01.errors import InvalidInput


def logical_lines(text: str) -> list[str]:
    """Dockerfile instructions with ``\\`` continuations joined and comments dropped."""
    out: list[str] = []
    cur = ""
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        s = line.strip()
        if s.startswith("#") and (cur or not s.lower().replace(" ", "").startswith("#escape=")):
            continue  # comment lines, also inside a continuation (as Docker does)
        if s.lower().replace(" ", "").startswith("#escape="):
            if s.split("=", 1)[1].strip() != "\\":
                raise InvalidInput("the Dockerfile's escape directive is not supported by DS01",
                                   "remove the '# escape=' line and use backslash continuations")
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def content_hash(
    dockerfile_text: str,
    requirements_bytes: bytes | None = None,
    other_context_files: Mapping[str, bytes] | None = None,
) -> str:
    """``sha256:<hex>`` over everything that decides the build's result, for "nothing changed,
    skip the rebuild". Each part is length-prefixed so no two different inputs can collide by
    concatenation; other files are hashed in path order so dict order does not matter. Callers
    should put the base image's digest and the build args in ``other_context_files`` too."""
    h = hashlib.sha256()

    def part(tag: str, data: bytes) -> None:
        h.update(tag.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    part("dockerfile", dockerfile_text.encode("utf-8"))
    if requirements_bytes is None:
        part("no-requirements", b"")
    else:
        part("requirements", requirements_bytes)
    for path in sorted(other_context_files or {}):
        part("file:" + path, (other_context_files or {})[path])
    return "sha256:" + h.hexdigest()
