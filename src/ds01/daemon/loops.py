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
    released = await asyncio.to_thread(api.gpu.release_expired_holds)
    served = await asyncio.to_thread(api.gpu.serve_queue)
    if released or served:
        log.info("tick: released %d device(s), served %d queued request(s)", released, len(served))
