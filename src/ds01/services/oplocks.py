"""One verb at a time per project: the per-(uid, project) locks of ContainerService.

A create, start, stop or remove of a project's container is a read-decide-act-record sequence
across the engine and the state DB. Two of them interleaved (or a listing's "gone" decision landing
between a verb's engine call and its record write) is how a record got marked gone, and its GPU
freed, while the container lived on. Verbs take the lock (waiting a bounded time, then ``Busy``);
listings and the lifecycle tick only *try* it and leave a project alone while a verb holds it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from ds01.errors import Busy


class ProjectLocks:
    def __init__(self, wait: float = 30.0):
        self.wait = wait
        self._locks: dict[tuple[int, str], threading.RLock] = {}
        self._guard = threading.Lock()

    def _lock(self, uid: int, project: str) -> threading.RLock:
        with self._guard:
            lk = self._locks.get((uid, project))
            if lk is None:
                lk = self._locks[(uid, project)] = threading.RLock()
            return lk

    @contextmanager
    def hold(self, uid: int, project: str) -> Iterator[None]:
        """Exclusive (re-entrant) hold for a verb; ``Busy`` after ``wait`` seconds."""
        lk = self._lock(uid, project)
        if not lk.acquire(timeout=self.wait):
            raise Busy(f"another request for project {project!r} is in progress",
                       "wait for it to finish, then try again")
        try:
            yield
        finally:
            lk.release()

    @contextmanager
    def try_hold(self, uid: int, project: str) -> Iterator[bool]:
        """Hold if free (or already held by this thread); yields whether it is held."""
        lk = self._lock(uid, project)
        got = lk.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lk.release()
