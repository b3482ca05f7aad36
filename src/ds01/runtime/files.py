"""Small files the daemon binds read-only into a container (``ContainerSpec.files``): written
root-owned, mode 0644, next to the container's account files, removed with them."""

from __future__ import annotations

import os


def write_bound_files(directory: str, files: tuple[tuple[str, str], ...]) -> dict[str, dict[str, str]]:
    """Write each ``(target, text)`` under ``directory``; returns Docker ``binds`` entries."""
    binds: dict[str, dict[str, str]] = {}
    for i, (target, text) in enumerate(files):
        path = os.path.join(directory, f"file-{i}")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        binds[path] = {"bind": target, "mode": "ro"}
    return binds
