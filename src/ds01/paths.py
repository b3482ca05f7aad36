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
            socket=r / SOCKET,
            state_dir=r / "var/lib/ds01",
            log_dir=r / "var/log/ds01",
        )

    @classmethod
    def from_env(cls) -> "Paths":
        return cls.under(os.environ.get("DS01_ROOT") or None)


SOCKET = "run/ds01/ds01.sock"  # below the root; the CLI (ds01.client.http, no pathlib) repeats it; a test keeps them equal
