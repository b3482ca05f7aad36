"""The daemon's clock (``Context.clock``): wall time with steps turned into a bounded slew
(``policy.clock``), persisted as a mark each tick so a restart continues it."""

from __future__ import annotations

import threading
import time
from typing import Callable

from ds01.policy.clock import TOLERANCE, Mark, advance, resume


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def boottime() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME where there is one)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


class SteadyClock:
    """Callable like ``time.time``; thread-safe. ``offset``: how far the wall clock is from it."""

    def __init__(self, mark: Mark | None = None, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = boottime, boot: str | None = None):
        self._wall, self._mono = wall, mono
        self.boot = boot_id() if boot is None else boot
        self._lock = threading.Lock()
        m, w = mono(), wall()
        self._now, self._at = resume(mark, w, m, self.boot), m
        self.offset = w - self._now

    def __call__(self) -> float:
        with self._lock:
            m, w = self._mono(), self._wall()
            self._now, self._at = advance(self._now, self._at, w, m), max(m, self._at)
            self.offset = w - self._now
            return self._now

    def stepped(self) -> bool:
        """Whether the wall clock is away from DS01 time by more than the tolerance now."""
        return abs(self.offset) > TOLERANCE

    def mark(self) -> Mark:
        now = self()
        return Mark(now, self._at, self.boot)
