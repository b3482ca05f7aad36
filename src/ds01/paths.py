"""Where things live on a host; all relocatable under one root (``ds01d --root`` / ``DS01_ROOT``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    config: Path
    socket: Path
    state_dir: Path
    log_dir: Path

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def events(self) -> Path:
        return self.log_dir / "events.jsonl"

    @classmethod
    def under(cls, root: str | os.PathLike[str] | None) -> "Paths":
        """The standard layout, optionally below ``root`` (tests run hermetically this way)."""
        r = Path(root) if root else Path("/")
        return cls(
            config=r / "etc/ds01/config.yaml",
            socket=r / "run/ds01/ds01.sock",
            state_dir=r / "var/lib/ds01",
            log_dir=r / "var/log/ds01",
        )

    @classmethod
    def from_env(cls) -> "Paths":
        return cls.under(os.environ.get("DS01_ROOT") or None)


def client_socket_path() -> Path:
    """Where the CLI looks for the daemon: ``DS01_SOCKET``, else under ``DS01_ROOT``, else /run."""
    explicit = os.environ.get("DS01_SOCKET")
    if explicit:
        return Path(explicit)
    return Paths.from_env().socket
