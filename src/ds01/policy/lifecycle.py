"""Lifecycle decisions (issue 6): pure functions of (history, policy, now). No I/O, no clock.

One call of :func:`decide` per container per daemon tick. It folds the newest sample into the
container's timers and returns the actions due now (warn, stop, remove), the updated timers (the
caller persists them, so a daemon restart continues them) and when something may next be due
(the daemon wakes up then, so actions happen at their deadline, not up to one tick later).

Rules
-----
* **Idle** at a sample means every enabled signal is at or below its threshold
  (:func:`is_idle`). An unknown CPU or process count is *not* idle (a reader failure must never
  kill work); an unknown GPU figure (MIG instances: NVML has no per-instance utilization) or
  network figure is ignored, so such containers are judged on the other signals.
* ``idle_since`` is the start of the first idle sample's interval; any non-idle sample ends the
  episode (and resets its warnings).
* The idle clock starts at ``max(idle_since, started_at + startup_grace, keepalive_until,
  end of an idle exemption)``: idle time during the grace period, a keepalive or an exemption
  does not count.
* The idle timeout is multiplied by ``busy_factor`` while the machine is busy, for containers
  that hold GPUs (the point is to hand GPUs to people who wait).
* Warnings at the configured fractions of the timeout (idle: 80 %/95 %, runtime: 75 %/90 %),
  each once per episode; several due at once are one message.
* **No instant kills**: the action needs every warning sent, and comes no earlier than the
  deadline nor earlier than ``min((1 - last fraction) * timeout, max_late_notice)`` after the last
  warning. So a warning that is late (daemon was down, the timeout shrank, an exemption ended) is
  still followed by a real notice, and on-time warnings change nothing.
* **No free time**: timers are absolute times; idle time while the daemon was down counts when
  the first sample after the restart (averaged since the last one before it) is idle.
* ``max_runtime`` counts from the start of this run; exemptions suspend it; keepalive does not.
* Stopped containers are removed after ``container_hold_after_stop``; created and never started
  ones after ``never_started_timeout``. A value of 0 switches a rule off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ds01.models.config import IdleThresholds, LifecycleConfig

NEVER = -math.inf


@dataclass(frozen=True)
class Sample:
    """One measurement of a running container. Rates average over ``[start, time]``."""

    start: float
    time: float
    cpu_percent: float | None  # % of one core
    gpu_percent: float | None = None  # highest of the container's devices; None = unknown / no GPU
    processes: int | None = None  # non-shell processes
    net_bytes_per_s: float | None = None
    gpu_memory_bytes: int | None = None  # evidence only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("cpu_percent", "gpu_percent", "net_bytes_per_s"):
            if d[k] is not None:
                d[k] = round(d[k], 2)
        d["start"], d["time"] = round(self.start, 3), round(self.time, 3)
        return d


def is_idle(s: Sample, thr: IdleThresholds) -> bool:
    if thr.cpu_percent is not None and (s.cpu_percent is None or s.cpu_percent > thr.cpu_percent):
        return False
    if thr.processes is not None and (s.processes is None or s.processes > thr.processes):
        return False
    if thr.gpu_percent is not None and s.gpu_percent is not None and s.gpu_percent > thr.gpu_percent:
        return False
    if (thr.network_bytes_per_s is not None and s.net_bytes_per_s is not None
            and s.net_bytes_per_s > thr.network_bytes_per_s):
        return False
    return True


@dataclass(frozen=True)
class Timers:
    """Per-container state that survives a daemon restart (the ``lifecycle`` table)."""

    run_started: float | None = None
    idle_since: float | None = None
    idle_warned: int = 0
    idle_warned_at: float | None = None
    runtime_warned: int = 0
    runtime_warned_at: float | None = None
    keepalive_until: float | None = None


@dataclass(frozen=True)
class Facts:
    """The container as the state DB knows it."""

    status: str  # created | running | exited
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    holds_gpus: bool = False


@dataclass(frozen=True)
class Policy:
    """Everything the rules need for one container, resolved by the caller."""

    idle_timeout: float
    max_runtime: float
    thresholds: IdleThresholds = IdleThresholds()
    startup_grace: float = 0.0
    machine_busy: bool = False
    busy_factor: float = 0.5
    idle_warnings: tuple[float, ...] = (0.8, 0.95)
    runtime_warnings: tuple[float, ...] = (0.75, 0.9)
    max_late_notice: float = 600.0
    container_hold_after_stop: float = 0.0
    never_started_timeout: float = 0.0
    idle_exempt_until: float | None = None
    runtime_exempt_until: float | None = None

    @classmethod
    def build(cls, lc: LifecycleConfig, idle_timeout: float, max_runtime: float, *, group: str | None = None,
              machine_busy: bool = False, idle_exempt_until: float | None = None,
              runtime_exempt_until: float | None = None) -> "Policy":
        return cls(
            idle_timeout=idle_timeout, max_runtime=max_runtime,
            thresholds=lc.group_thresholds.get(group or "", lc.thresholds) if group else lc.thresholds,
            startup_grace=lc.startup_grace, machine_busy=machine_busy, busy_factor=lc.busy_factor,
            idle_warnings=tuple(lc.idle_warnings), runtime_warnings=tuple(lc.runtime_warnings),
            max_late_notice=lc.max_late_notice, container_hold_after_stop=lc.container_hold_after_stop,
            never_started_timeout=lc.never_started_timeout, idle_exempt_until=idle_exempt_until,
            runtime_exempt_until=runtime_exempt_until)


@dataclass(frozen=True)
class History:
    facts: Facts
    timers: Timers = Timers()
    samples: tuple[Sample, ...] = ()  # oldest first; the newest is this tick's (running containers)


ActionKind = Literal["warn", "stop", "remove"]
Reason = Literal["idle", "max_runtime", "stopped", "never_started"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: Reason
    at: float  # warn: when the action will happen (if nothing changes); stop/remove: the deadline
    level: int = 0  # warn: how many warning points are reached (1-based)
    of: int = 0  # warn: how many warning points there are
    detail: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    timers: Timers
    next_due: float | None  # the next time something may be due if nothing changes


def notice(fractions: tuple[float, ...], timeout: float, cap: float) -> float:
    """Least time between the last warning and the action."""
    if not fractions:
        return 0.0
    return min((1.0 - fractions[-1]) * timeout, cap)


def _exempt(until: float | None, now: float) -> bool:
    return until is not None and until > now


def _evidence(samples: tuple[Sample, ...], n: int = 5) -> list[dict[str, Any]]:
    return [s.to_dict() for s in samples[-n:]]


def _escalate(now: float, clock: float, timeout: float, fractions: tuple[float, ...], warned: int,
              warned_at: float | None, cap: float) -> tuple[int, int | None, float | None, float, float | None]:
    """Warning/stop bookkeeping for one timer. Returns (warned, new warning level or None,
    warned_at, stop_at, next warning point or None)."""
    deadline = clock + timeout
    points = [clock + f * timeout for f in fractions]
    reached = sum(1 for p in points if now >= p)
    new = None
    if reached > warned:
        warned, warned_at, new = reached, now, reached
    stop_at = deadline
    if fractions:
        if warned < len(fractions):
            stop_at = math.inf
        else:
            stop_at = max(deadline, (warned_at if warned_at is not None else now) + notice(fractions, timeout, cap))
    upcoming = next((p for p in points if p > now), None)
    return warned, new, warned_at, stop_at, upcoming


def decide(history: History, policy: Policy, now: float) -> Decision:
    f, t, p = history.facts, history.timers, policy
    dues: list[float] = []

    if f.status == "created":
        if p.never_started_timeout > 0:
            due = f.created_at + p.never_started_timeout
            if now >= due:
                return Decision((Action("remove", "never_started", due,
                                        detail={"created_at": f.created_at, "timeout": p.never_started_timeout}),),
                                t, None)
            dues.append(due)
        return Decision((), t, min(dues) if dues else None)

    if f.status == "exited":
        if p.container_hold_after_stop > 0 and f.stopped_at is not None:
            due = f.stopped_at + p.container_hold_after_stop
            if now >= due:
                return Decision((Action("remove", "stopped", due, detail={
                    "stopped_at": f.stopped_at, "timeout": p.container_hold_after_stop}),), t, None)
            dues.append(due)
        return Decision((), t, min(dues) if dues else None)

    if f.status != "running":
        return Decision((), t, None)

    started = f.started_at if f.started_at is not None else f.created_at
    if t.run_started != started:  # a new run: fresh timers (a keepalive still in the future stays)
        t = Timers(run_started=started, keepalive_until=t.keepalive_until)
    actions: list[Action] = []
    stop: Action | None = None

    # -- max runtime ------------------------------------------------------------------------
    if p.max_runtime > 0:
        if _exempt(p.runtime_exempt_until, now):
            dues.append(p.runtime_exempt_until)  # type: ignore[arg-type]
        else:
            warned, new, warned_at, stop_at, upcoming = _escalate(
                now, started, p.max_runtime, p.runtime_warnings, t.runtime_warned, t.runtime_warned_at,
                p.max_late_notice)
            t = replace(t, runtime_warned=warned, runtime_warned_at=warned_at)
            detail = {"running_s": round(now - started, 1), "max_runtime": p.max_runtime,
                      "started_at": started}
            if now >= stop_at:
                stop = Action("stop", "max_runtime", stop_at, detail={**detail, "samples": _evidence(history.samples)})
            else:
                if new is not None:
                    actions.append(Action("warn", "max_runtime", stop_at if math.isfinite(stop_at) else
                                          started + p.max_runtime, level=new, of=len(p.runtime_warnings),
                                          detail=detail))
                dues += [x for x in (upcoming, stop_at) if x is not None and math.isfinite(x)]

    # -- idle -------------------------------------------------------------------------------
    sample = history.samples[-1] if history.samples else None
    if sample is not None:
        if not is_idle(sample, p.thresholds):
            if t.idle_since is not None or t.idle_warned:
                t = replace(t, idle_since=None, idle_warned=0, idle_warned_at=None)
        else:
            since = t.idle_since if t.idle_since is not None else sample.start
            t = replace(t, idle_since=since)
            if p.idle_timeout > 0 and stop is None:
                if _exempt(p.idle_exempt_until, now):
                    dues.append(p.idle_exempt_until)  # type: ignore[arg-type]
                else:
                    busy = p.machine_busy and f.holds_gpus
                    timeout = p.idle_timeout * (p.busy_factor if busy else 1.0)
                    clock = max(since, started + p.startup_grace,
                                t.keepalive_until if t.keepalive_until is not None else NEVER,
                                p.idle_exempt_until if p.idle_exempt_until is not None else NEVER)
                    warned, new, warned_at, stop_at, upcoming = _escalate(
                        now, clock, timeout, p.idle_warnings, t.idle_warned, t.idle_warned_at, p.max_late_notice)
                    t = replace(t, idle_warned=warned, idle_warned_at=warned_at)
                    detail = {"idle_since": since, "idle_s": round(now - since, 1), "counted_from": clock,
                              "idle_timeout": timeout, "configured_timeout": p.idle_timeout,
                              "machine_busy": busy, "sample": sample.to_dict()}
                    if now >= stop_at:
                        stop = Action("stop", "idle", stop_at, detail={**detail, "samples": _evidence(history.samples)})
                    else:
                        if new is not None:
                            actions.append(Action("warn", "idle", stop_at if math.isfinite(stop_at) else
                                                  clock + timeout, level=new, of=len(p.idle_warnings),
                                                  detail=detail))
                        dues += [x for x in (upcoming, stop_at) if x is not None and math.isfinite(x)]

    if stop is not None:
        return Decision((stop,), t, None)
    future = [d for d in dues if d > now]
    return Decision(tuple(actions), t, min(future) if future else None)
