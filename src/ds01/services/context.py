"""What every service needs: config, state, runtime, events, clock. Built once by the daemon."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ds01.gpu.inventory import EmptySource, Inventory, InventorySource
from ds01.models.config import Config
from ds01.runtime.base import RuntimeBackend
from ds01.services.events import EventLog
from ds01.state.db import Store


@dataclass
class Context:
    config: Config
    store: Store
    runtime: RuntimeBackend
    events: EventLog
    instance: str = "default"
    clock: Callable[[], float] = field(default=time.time)
    gpu_source: InventorySource = field(default_factory=EmptySource)
    inventory: Inventory = field(default_factory=Inventory)
    # root-owned directory for pinned workspace mounts (services/workspace.py); None = pinning off
    mounts_dir: str | None = None

    def emit(self, action: str, who, target: str, result: str = "ok", reason: str | None = None,
             data: dict | None = None, actor=None) -> None:
        """An event about ``who``'s object; ``actor`` (an admin acting with --user) is recorded too."""
        d = dict(data or {})
        if actor is not None and actor.uid != who.uid:
            d["by"] = actor.name
        self.events.emit(action, user=who.name, uid=who.uid, target=target, result=result, reason=reason,
                         data=d or None)
