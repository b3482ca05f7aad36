"""A container that stopped without a DS01 verb: its reason, as an event its owner sees
(``container.exited``, e.g. "stopped when the container engine restarted"; policy/stops.py)."""

from __future__ import annotations

import logging

from ds01.errors import DS01Error
from ds01.policy.stops import engine_windows, parse_time, stop_reason
from ds01.runtime.base import ContainerInfo
from ds01.runtime.engine_health import engine_started_at
from ds01.services.context import Context
from ds01.state.db import ContainerRecord

log = logging.getLogger("ds01d")


def report_stop(ctx: Context, rec: ContainerRecord, info: ContainerInfo) -> str | None:
    """Emit why ``rec``'s container, believed running, has exited; the reason, or None when the
    engine cannot be asked. Never raises: a status refresh must not fail for its explanation."""
    try:
        if info.finished_at is None and rec.docker_id:  # a list snapshot: the state is in an inspect
            info = ctx.runtime.inspect(rec.docker_id) or info
        health = getattr(ctx.runtime, "health", None)
        windows = engine_windows(list(getattr(health, "outages", []) or []), engine_started_at())
        reason = stop_reason(info.exit_code, info.oom_killed, parse_time(info.finished_at), windows)
        ctx.events.emit("container.exited", user=rec.user, uid=rec.uid, target=rec.project, reason=reason,
                        data={"exit_code": info.exit_code, "finished_at": info.finished_at})
        return reason
    except DS01Error as e:
        log.info("why %s stopped is unknown: %s", rec.docker_name, e.message)
    except Exception:
        log.exception("could not record why %s stopped", rec.docker_name)
    return None
