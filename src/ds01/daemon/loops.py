"""The daemon's one periodic loop (no cron): each tick releases devices held too long after a
stop and serves the fair queue. A release wakes it early, so a queued request starts right after
the devices it waits for are freed, not a whole tick later."""

from __future__ import annotations

import asyncio
import logging

from ds01.daemon.app import Api

log = logging.getLogger("ds01d")


async def run_ticks(api: Api, interval: float, stop: asyncio.Event) -> None:
    api.loop = asyncio.get_running_loop()
    api.wakeup = asyncio.Event()
    while not stop.is_set():
        try:
            await tick(api)
        except Exception:
            log.exception("periodic tick failed")
        try:
            await asyncio.wait_for(api.wakeup.wait(), timeout=interval)
        except asyncio.TimeoutError:
            pass
        api.wakeup.clear()


async def tick(api: Api) -> None:
    # Lifecycle first (issue 6): a container it stops or removes can have its devices released and
    # handed to the queue in this same tick.
    next_due = None
    try:
        report = await asyncio.to_thread(api.lifecycle.tick)
        next_due = report.next_due
    except Exception:
        log.exception("lifecycle tick failed")
    released = await asyncio.to_thread(api.gpu.release_expired_holds)
    served = await asyncio.to_thread(api.gpu.serve_queue)
    if released or served:
        log.info("tick: released %d device(s), served %d queued request(s)", released, len(served))
    await _housekeeping(api)
    _wake_at(api, next_due)


_last_prune = 0.0


async def _housekeeping(api: Api) -> None:
    """Hourly: drop events past their retention from the state DB."""
    global _last_prune
    now = api.ctx.clock()
    if now - _last_prune < 3600:
        return
    _last_prune = now
    cutoff = now - api.ctx.config.daemon.events_retention
    n = await asyncio.to_thread(api.ctx.store.prune_events, cutoff)
    if n:
        log.info("pruned %d event(s) older than the retention", n)


def _wake_at(api: Api, due: float | None) -> None:
    """Wake the loop early when a lifecycle deadline (a warning, a stop, a device release) falls
    before the next regular tick, so actions happen at their time, not up to a tick later."""
    lc = api.lifecycle
    if lc.wake_handle is not None:
        lc.wake_handle.cancel()
        lc.wake_handle = None
    if due is None or api.loop is None or api.wakeup is None:
        return
    delay = max(0.05, due - api.ctx.clock() + 0.01)
    if delay < api.ctx.config.daemon.tick_interval:
        lc.wake_handle = api.loop.call_later(delay, api.wakeup.set)

