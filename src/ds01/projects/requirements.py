"""The project files ``requirements.txt`` names, read as the user (the CLI), and the Dockerfile's
requirements block kept in step with them (see ``ds01.images.requirements`` and
``ds01.images.dockerfile.sync_requirements``)."""

from __future__ import annotations

import os
from pathlib import Path

REQUIREMENTS = "requirements.txt"


def inputs(ws: Path, req_file: str = REQUIREMENTS) -> list[str]:
    """The project paths ``req_file`` makes pip read (itself included); InvalidInput naming a
    missing one (exit 3), before anything is built."""
    from ds01.images.requirements import requirement_inputs

    root = os.path.realpath(ws)

    def real(rel: str) -> str | None:
        p = os.path.realpath(os.path.join(root, rel))
        return p if p == root or p.startswith(root + os.sep) else None

    def read(rel: str) -> str | None:
        p = real(rel)
        try:
            with open(p, encoding="utf-8", errors="replace") as f:  # type: ignore[arg-type]
                return f.read(1024 * 1024)
        except (OSError, TypeError):
            return None

    def kind(rel: str) -> str | None:
        p = real(rel)
        if p is None:
            return None
        return "dir" if os.path.isdir(p) else "file" if os.path.isfile(p) else None

    found = requirement_inputs(req_file, read, kind)
    _check_in_context(ws, found)
    return found


def _check_in_context(ws: Path, paths: list[str]) -> None:
    """A path the build never sees (a data/ or models/ folder, .dockerignore) cannot be copied:
    say so now instead of failing in the middle of the build."""
    from ds01.errors import InvalidInput
    from ds01.images.context import DEFAULT_EXCLUDES, is_excluded, parse_patterns

    lines = list(DEFAULT_EXCLUDES)
    try:
        lines += (ws / ".dockerignore").read_text(errors="replace").splitlines()
    except OSError:
        pass
    patterns = parse_patterns(lines)
    for p in paths:
        if p != "." and is_excluded(p, patterns):
            raise InvalidInput(f"{p} is named by the requirements but is in a folder builds never see "
                               "(data/, models/, … or your .dockerignore)",
                               "move it, e.g. to wheels/, or re-include it with a '!' line in .dockerignore")


def sync_dockerfile(ws: Path, req_file: str = REQUIREMENTS) -> bool:
    """Rewrite the Dockerfile's requirements block so the build copies what ``req_file`` names
    now; True when the file changed. A Dockerfile without DS01's requirements section is left as
    it is, and so is everything outside that section. Raises InvalidInput for a missing file."""
    df = ws / "Dockerfile"
    if not (ws / req_file).is_file() or not df.is_file() or df.is_symlink():
        return False
    from ds01.images.dockerfile import sync_requirements

    text = df.read_text(errors="replace")
    new = sync_requirements(text, req_file, inputs(ws, req_file))
    if new is None or new == text:
        return False
    from ds01.projects.scaffold import write_file_atomic

    write_file_atomic(df, new, replace=True)
    return True
