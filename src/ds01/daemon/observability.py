"""The daemon's TCP listeners for people and Prometheus, plus the usage sampler (memory peaks,
and the utilization history the charts draw).

Started by ``serve()`` after the API socket is up; each part failing to bind is logged only
(observability must never keep the daemon from serving users).
"""

from __future__ import annotations

import asyncio
import logging

from ds01.daemon.connections import refusal_auditor
from ds01.daemon.metrics import Metrics
from ds01.daemon.services import Services
from ds01.daemon.web import StatusPage

log = logging.getLogger("ds01d")


class Observability:
    def __init__(self, s: Services, metrics: Metrics):
        self.s = s
        self.metrics = metrics
        self.cfg = s.ctx.config.observability
        self.page = self._page()
        self._sampler: asyncio.Task | None = None

    def _page(self) -> StatusPage:
        ctx = self.s.ctx
        return StatusPage(self.s.status, self.cfg.web, idle=ctx.config.daemon.connection_idle_timeout,
                          on_refused=refusal_auditor(ctx.events, "status page"), charts=self.s.charts)

    def reconfigure(self) -> None:
        """Re-read the settings after a config reload (between ``stop`` and ``start``)."""
        self.cfg = self.s.ctx.config.observability
        self.page = self._page()

    async def start(self, interval: float) -> None:
        await asyncio.to_thread(self.metrics.start, self.cfg.metrics.listen)
        await self.page.start(self.cfg.web.listen)
        self._sampler = asyncio.create_task(self._sample(max(5.0, min(interval, 60.0))))

    async def _sample(self, interval: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.s.usage.sample_peaks)
            except Exception:
                log.exception("usage sampling failed")
            if self.s.charts is not None:  # the charts' utilization history (5-min means)
                try:
                    await asyncio.to_thread(self.s.charts.sample)
                except Exception:
                    log.exception("utilization sampling failed")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            try:
                await self._sampler
            except (asyncio.CancelledError, Exception):
                pass
        await self.page.stop()
        await asyncio.to_thread(self.metrics.stop)
