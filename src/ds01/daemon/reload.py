"""SIGHUP and what a reload changes in the running daemon (issue 16).

``services.config_admin`` validates and swaps the config; the hooks here apply the parts that live
outside ``ctx.config`` reads: the log level, the socket's mode, the event log's rotation, and the
observability listeners (restarted when their settings change). SIGHUP is ignored from the first
line of ``main()`` until the handler is installed, and afterwards only ever reloads: it can never
stop the daemon (also under ``nohup``, which starts us with SIGHUP ignored: the handler replaces
that, so ``kill -HUP`` reloads there too).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ds01.models.config import Config

log = logging.getLogger("ds01d")


def ignore_sighup() -> None:
    """Until :func:`install` runs: a SIGHUP during start-up is not fatal (the default action)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def install(loop: asyncio.AbstractEventLoop, services: Any, socket_path: Path, obs: Any,
            tick_interval: float) -> None:
    """Hooks on ``services.config_admin`` and the SIGHUP handler."""
    ca = services.config_admin
    if ca is None:
        return

    def apply(old: Config, new: Config) -> None:
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        if new.daemon.socket_mode != old.daemon.socket_mode:
            os.chmod(socket_path, new.daemon.socket_mode)
        ev = services.ctx.events
        ev.max_bytes, ev.keep = new.daemon.events_max_bytes, max(1, new.daemon.events_keep)
        if new.observability != old.observability and obs is not None:
            # restart the listeners on the loop; wait (we run in a worker thread) so the reload's
            # answer comes after they are up
            fut = asyncio.run_coroutine_threadsafe(_restart_observability(obs, tick_interval), loop)
            fut.result(timeout=30)

    ca.hooks.append(apply)

    pending: set[asyncio.Task] = set()  # a reference per running reload (tasks are weakly held)

    def on_hup() -> None:
        async def run() -> None:
            try:
                await asyncio.to_thread(ca.reload, None, "SIGHUP")
            except Exception as e:  # an invalid file: logged (and an event); the daemon keeps running
                log.error("SIGHUP: configuration not reloaded: %s", getattr(e, "message", e))

        task = loop.create_task(run())
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)


async def _restart_observability(obs: Any, interval: float) -> None:
    await obs.stop()
    obs.reconfigure()
    await obs.start(interval)
    log.info("observability listeners restarted with the new settings")
