"""Why a container stopped that no DS01 verb stopped (issue 16): pure, from the engine's state.

A DS01 container's main process is ``sleep infinity`` under an init, so it never ends by itself:
an exit DS01 did not ask for came from outside. The engine's state says which:

* ``OOMKilled``: the kernel killed it at its memory limit;
* its ``FinishedAt`` inside a window in which the engine was away (an outage the daemon saw:
  its last answer before, its first after; or the engine process's start, with the shutdown
  before it): the engine stopped it when it stopped or restarted;
* exit code 255 with no signal: what the engine records for a container whose process it found
  gone when it started again (after a crash or a host reboot);
* otherwise it was stopped or killed outside DS01 (``docker stop``, a signal), exit code given.
"""

from __future__ import annotations

from datetime import datetime, timezone

ENGINE_RESTART = "stopped when the container engine restarted"
OUT_OF_MEMORY = "killed: it ran out of memory (its limit is the container's memory limit)"
# an engine stops its containers with a grace (10-15 s each, in parallel) before it exits, and
# kills those it finds without a process in its first seconds
SHUTDOWN_BEFORE = 120.0
RESTORE_AFTER = 30.0
SLACK = 1.0  # times read in two processes (the daemon's, the engine's), rounding


def parse_time(text: str | None) -> float | None:
    """The engine's RFC 3339 time (nanoseconds, ``Z``) as epoch seconds; None for "never"
    (``0001-01-01T00:00:00Z``) or anything unreadable."""
    if not text or text.startswith("0001-"):
        return None
    t = text.strip().rstrip("Z")
    offset = "+00:00"
    for sign in ("+", "-"):
        head, sep, tail = t[10:].rpartition(sign)
        if sep and ":" in tail and len(tail) == 5:
            t, offset = t[:10] + head, sign + tail
            break
    if "." in t:
        whole, frac = t.split(".", 1)
        t = f"{whole}.{frac[:6]}"
    try:
        return datetime.fromisoformat(t + offset).astimezone(timezone.utc).timestamp()
    except ValueError:
        return None


def engine_windows(outages: list[tuple[float, float]], engine_started: float | None) -> list[tuple[float, float]]:
    """The times the engine was away: outages seen (from the last answer before to the first
    after) and, when known, the engine process's start (the shutdown before it, its restore)."""
    wins = list(outages)
    if engine_started is not None:
        wins.append((engine_started - SHUTDOWN_BEFORE, engine_started + RESTORE_AFTER))
    return wins


def stop_reason(exit_code: int | None, oom_killed: bool, finished_at: float | None,
                windows: list[tuple[float, float]]) -> str:
    """Why a container DS01 believed running has exited (see the module's doc)."""
    if oom_killed:
        return OUT_OF_MEMORY
    if finished_at is not None and any(a - SLACK <= finished_at <= b + SLACK for a, b in windows):
        return ENGINE_RESTART
    if exit_code == 255:
        return ENGINE_RESTART
    if exit_code is not None and exit_code > 128:
        return f"stopped outside DS01 (killed by signal {exit_code - 128}, exit code {exit_code})"
    return f"stopped outside DS01 (exit code {exit_code if exit_code is not None else 'unknown'})"
