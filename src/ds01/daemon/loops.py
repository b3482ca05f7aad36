"""The daemon's one periodic loop (no cron): each tick releases devices held too long after a
stop and serves the fair queue. A release wakes it early (:class:`Waker`), so a queued request
starts right after the devices it waits for are freed, not a whole tick later."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ds01.daemon.services import Services
from ds01.errors import EngineUnavailable

log = logging.getLogger("ds01d")


class Waker:
    """Wakes the periodic loop before its next regular tick. Built by the composition root
    before the services, so ``kick`` can be handed to them as their release callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.event = asyncio.Event()
        self._timer: Any = None

    def kick(self) -> None:
        """Wake now (devices were released). Safe from any thread."""
        self.loop.call_soon_threadsafe(self.event.set)

    def at(self, delay: float | None) -> None:
        """Wake after ``delay`` seconds (None: no early wake-up); replaces the previous one.
        Call from the loop's thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is not None:
            self._timer = self.loop.call_later(delay, self.event.set)


async def run_ticks(s: Services, waker: Waker, interval: float, stop: asyncio.Event) -> None:
    waker.event.clear()  # a release before the first tick is served by that tick
    while not stop.is_set():
        try:
            await tick(s, waker)
        except EngineUnavailable as e:  # an outage: one line a tick, not a traceback
            log.warning("periodic tick: %s", e.message)
        except Exception:
            log.exception("periodic tick failed")
        try:
            # read each time: a reload may change the interval (issue 16)
            await asyncio.wait_for(waker.event.wait(), timeout=s.ctx.config.daemon.tick_interval or interval)
        except asyncio.TimeoutError:
            pass
        waker.event.clear()


async def tick(s: Services, waker: Waker | None = None) -> None:
    # Lifecycle first (issue 6): a container it stops or removes can have its devices released and
    # handed to the queue in this same tick.
    next_due = None
    try:
        report = await asyncio.to_thread(s.lifecycle.tick)
        next_due = report.next_due
    except EngineUnavailable as e:
        log.warning("lifecycle tick: %s", e.message)
    except Exception:
        log.exception("lifecycle tick failed")
    released = await asyncio.to_thread(s.gpu.release_expired_holds)
    try:  # batch jobs: time limits, failed dependencies, CPU-only starts (issue 14)
        await asyncio.to_thread(s.jobs.tick)
    except Exception:
        log.exception("jobs tick failed")
    cluster = getattr(s, "cluster", None)
    if cluster is not None and cluster.active:  # issue 18: books = Slurm's, drained nodes, nodes' GPUs
        try:
            await asyncio.to_thread(cluster.tick)
        except Exception:
            log.exception("cluster tick failed")
    served = await asyncio.to_thread(s.gpu.serve_queue)
    disk = getattr(s, "disk", None)
    if disk is not None:  # who is due for a disk measurement (done in its own thread)
        try:
            await asyncio.to_thread(disk.tick)
        except Exception:
            log.exception("disk tick failed")
    await asyncio.to_thread(s.jobs.mark_waiting)
    if released or served:
        log.info("tick: released %d device(s), served %d queued request(s)", released, len(served))
    await _housekeeping(s)
    if waker is not None:
        _wake_at(s, waker, next_due)


_last_prune = 0.0


async def _housekeeping(s: Services) -> None:
    """Hourly: drop events past their retention from the state DB."""
    global _last_prune
    now = s.ctx.clock()
    if now - _last_prune < 3600:
        return
    _last_prune = now
    cutoff = now - s.ctx.config.daemon.events_retention
    n = await asyncio.to_thread(s.ctx.store.prune_events, cutoff)
    await asyncio.to_thread(s.jobs.prune)  # ended jobs past jobs.retention
    if n:
        log.info("pruned %d event(s) older than the retention", n)


def _wake_at(s: Services, waker: Waker, due: float | None) -> None:
    """Wake the loop early when a lifecycle deadline (a warning, a stop, a device release) falls
    before the next regular tick, so actions happen at their time, not up to a tick later."""
    delay = None if due is None else max(0.05, due - s.ctx.clock() + 0.01)
    waker.at(delay if delay is not None and delay < s.ctx.config.daemon.tick_interval else None)
