"""Lifecycle automation (issue 6): sample every managed container each tick, apply the pure rules
of :mod:`ds01.policy.lifecycle`, persist the timers, and carry out warnings, stops and removals.

Cost per tick: one engine call (list), one GPU utilization read (NVML / simulated: never
``nvidia-smi``), a few small cgroup/proc files per running container, a handful of SQLite
statements. A container's init pid is asked from the engine once (to find its cgroup).

Actions run in a small worker pool so a slow graceful stop (SIGTERM, then kill after
``lifecycle.stop_grace``) never delays the next tick; a container with an action in flight is
left alone until it is done. The workspace is never touched: stop and remove are the ordinary
ContainerService verbs.
"""

from __future__ import annotations

import logging
import pwd
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ds01.errors import Conflict, DS01Error, InvalidInput, NotFound, PolicyDenied
from ds01 import labels
from ds01.policy.lifecycle import Action, Decision, Facts, History, Policy, Sample, Timers, decide
from ds01.policy.limits import EffectiveLimits, effective_limits
from ds01.services.containers import ContainerService
from ds01.services.identity import Caller, caller_from_uid
from ds01.services.sampling import CgroupPaths, CgroupReader, init_pid
from ds01.state.db import ContainerRecord
from ds01.state.lifecycle import BASE_COLS as _BASE_COLS
from ds01.state.lifecycle import TIMER_COLS as _TIMER_COLS
from ds01.units import format_duration

log = logging.getLogger("ds01d")

EXEMPT_KINDS = ("idle", "runtime", "all")


@dataclass
class TickReport:
    sampled: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)
    next_due: float | None = None
    machine_busy: bool = False


class LifecycleService:
    def __init__(self, ctx, containers: ContainerService, reader: CgroupReader | None = None,
                 notify_fn=None, workers: int = 8):
        self.ctx = ctx
        self.containers = containers
        self.reader = reader or CgroupReader()
        self._notify_fn = notify_fn
        self._lock = threading.Lock()  # the tick's read-decide-write of timers vs keepalive
        self._cg: dict[str, tuple[int | None, CgroupPaths | None]] = {}
        self._samples: dict[int, deque[Sample]] = {}
        self._inflight: set[int] = set()
        self._inflight_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ds01d-lifecycle")
        self._warned_unreadable: set[str] = set()

    @property
    def lc(self):
        return self.ctx.config.lifecycle

    # -- the tick ---------------------------------------------------------------------------
    def tick(self) -> TickReport:
        report = TickReport()
        if not self.lc.enabled:
            return report
        now = self.ctx.clock()
        store = self.ctx.store
        # records first, then the engine's list: a snapshot older than a record could call a
        # just-created container gone (ContainerService._apply_info re-checks by id anyway)
        recs = store.live_containers()
        infos = {i.id: i for i in self.ctx.runtime.list(labels.managed(self.ctx.instance))}
        try:
            util = self.ctx.gpu_source.utilization()
        except DS01Error as e:
            log.warning("lifecycle: GPU utilization unavailable (%s); judging on CPU/processes", e.message)
            util = {}
        held = store.held_devices()
        holders = set(held.values())
        held_eq = sum(self.ctx.inventory.device(u).equivalents for u in held if self.ctx.inventory.device(u))
        total = self.ctx.inventory.total_equivalents
        waiting = store.waiting_count()
        busy = bool(waiting) or (total > 0 and held_eq / total >= self.lc.busy_share - 1e-9)
        report.machine_busy = busy
        exempt = self._exemption_ends(now)
        limits: dict[int, EffectiveLimits] = {}
        todo: list[tuple[ContainerRecord, Action, Decision]] = []
        dues: list[float] = []

        with self._lock:
            rows = store.lifecycle_rows()
            writes: list[tuple] = []
            live_ids = set()
            for rec in recs:
                if rec.status == "creating":
                    continue
                with self._inflight_lock:
                    if rec.id in self._inflight:
                        continue
                rec = self.containers._apply_info(rec, infos.get(rec.docker_id or ""))
                if rec.status not in ("created", "running", "exited"):
                    continue
                live_ids.add(rec.id)
                lim = limits.get(rec.uid)
                if lim is None:
                    lim = limits[rec.uid] = self._limits(rec)
                row = rows.get(rec.id) or {}
                samples: tuple[Sample, ...] = ()
                base: dict[str, Any] = {k: row.get(k) for k in _BASE_COLS}
                if rec.status == "running":
                    s, base = self._measure(rec, row, now, util)
                    ring = self._samples.setdefault(rec.id, deque(maxlen=6))
                    ring.append(s)
                    samples = tuple(ring)
                    report.sampled += 1
                ex = exempt.get(rec.user, {})
                policy = Policy.build(self.lc, lim.idle_timeout, lim.max_runtime, group=lim.group,
                                      machine_busy=busy, idle_exempt_until=ex.get("idle"),
                                      runtime_exempt_until=ex.get("runtime"))
                timers = Timers(**{k: row[k] for k in _TIMER_COLS}) if row else Timers()
                facts = Facts(status=rec.status, created_at=rec.created_at, started_at=rec.started_at,
                              stopped_at=rec.stopped_at, holds_gpus=rec.id in holders)
                d = decide(History(facts, timers, samples), policy, now)
                if d.next_due is not None:
                    dues.append(d.next_due)
                if rec.status == "exited" and rec.id in holders and rec.stopped_at is not None:
                    dues.append(rec.stopped_at + lim.gpu_hold_after_stop)  # the device release
                for a in d.actions:
                    todo.append((rec, a, d))
                if d.timers != timers or rec.status == "running" or not row:
                    writes.append((rec.id, *(getattr(d.timers, k) for k in _TIMER_COLS),
                                   *(base.get(k) for k in _BASE_COLS)))
            if writes:
                store.write_lifecycle(writes)
            for gone in set(self._samples) - live_ids:
                self._samples.pop(gone, None)
            if len(rows) > len(live_ids) + 64:  # forget timers of containers that are gone
                store.forget_ended_lifecycle()

        for rec, action, _d in todo:
            report.actions.append({"project": rec.project, "user": rec.user, "kind": action.kind,
                                   "reason": action.reason})
            self._carry_out(rec, action, now)
        future = [d for d in dues if d > now]
        report.next_due = min(future) if future else None
        return report

    def _limits(self, rec: ContainerRecord) -> EffectiveLimits:
        try:
            who = caller_from_uid(rec.uid, None, self.ctx.config.admin_group)
            return effective_limits(self.ctx.config, who.name, set(who.groups))
        except DS01Error:  # the account is gone: the defaults still apply to its containers
            return effective_limits(self.ctx.config, rec.user, set())

    def _exemption_ends(self, now: float) -> dict[str, dict[str, float]]:
        """user -> {"idle": end, "runtime": end}: the latest end of each user's exemptions (a
        revoked one ends when it was revoked). Ended ones matter too: idle time during an
        exemption does not count."""
        out: dict[str, dict[str, float]] = {}
        for r in self.ctx.store.exemption_ends():
            kinds = ("idle", "runtime") if r["kind"] == "all" else (r["kind"],)
            for k in kinds:
                cur = out.setdefault(r["user"], {}).get(k)
                out[r["user"]][k] = r["e"] if cur is None else max(cur, r["e"])
        return out

    # -- measuring --------------------------------------------------------------------------
    def _locate(self, docker_id: str) -> tuple[int | None, CgroupPaths | None]:
        hit = self._cg.get(docker_id)
        if hit is not None and hit[1] is not None:
            return hit
        pid = init_pid(self.ctx.runtime, docker_id)
        paths = self.reader.from_pid(pid) if pid else None
        if paths is None:
            paths = self.reader.from_id(docker_id)
        self._cg[docker_id] = (pid, paths)
        if len(self._cg) > 4096:
            self._cg.clear()
        return pid, paths

    def _measure(self, rec: ContainerRecord, row: dict, now: float,
                 util: dict) -> tuple[Sample, dict[str, Any]]:
        started = rec.started_at if rec.started_at is not None else rec.created_at
        cpu_ns = None
        pid: int | None = None
        paths: CgroupPaths | None = None
        remote = None
        if rec.docker_id and getattr(self.ctx.runtime, "remote", False):  # cluster mode: its node measures
            try:
                remote = self.ctx.runtime.sample(rec.docker_id, sorted(self.lc.ignore_processes))  # type: ignore[attr-defined]
            except DS01Error:
                remote = {}
            cpu_ns = remote.get("cpu_ns")
        elif rec.docker_id:
            pid, paths = self._locate(rec.docker_id)
            cpu_ns = self.reader.cpu_ns(paths) if paths else None
            if cpu_ns is None:  # restarted with a new cgroup, or not found yet: look again
                self._cg.pop(rec.docker_id, None)
                pid, paths = self._locate(rec.docker_id)
                cpu_ns = self.reader.cpu_ns(paths) if paths else None
            if cpu_ns is None and rec.docker_id not in self._warned_unreadable:
                self._warned_unreadable.add(rec.docker_id)
                log.warning("lifecycle: cannot read the CPU use of %s; it is never treated as idle",
                            rec.docker_name)
        same_run = row.get("run_started") == started
        base_t, base_cpu = row.get("last_sample_at"), row.get("last_cpu_ns")
        if not same_run or base_t is None or base_cpu is None or (cpu_ns is not None and cpu_ns < base_cpu):
            base_t, base_cpu = started, 0  # average since the start of this run
        dt = max(now - base_t, 1e-3)
        cpu_pct = None if cpu_ns is None else max(0.0, (cpu_ns - base_cpu) / 1e9 / dt * 100.0)
        procs = None if remote is None else remote.get("processes")
        if paths is not None:
            pids = self.reader.pids(paths)
            if pids is not None:
                procs = self.reader.busy_processes(pids, frozenset(self.lc.ignore_processes))
        net_rate, net_bytes = None, None
        if self.lc.thresholds.network_bytes_per_s is not None or any(
                t.network_bytes_per_s is not None for t in self.lc.group_thresholds.values()):
            if pid:
                net_bytes = self.reader.net_bytes(pid)
            elif remote is not None:
                net_bytes = remote.get("net_bytes")
            last_net = row.get("last_net_bytes")
            if net_bytes is not None and last_net is not None and same_run and net_bytes >= last_net \
                    and row.get("last_sample_at") is not None:
                net_rate = (net_bytes - last_net) / max(now - row["last_sample_at"], 1e-3)
        gpu, mem = None, None
        for u in rec.gpus:
            du = util.get(u)
            if du is None:
                continue
            if du.gpu_percent is not None:
                gpu = du.gpu_percent if gpu is None else max(gpu, du.gpu_percent)
            if du.memory_used_bytes is not None:
                mem = (mem or 0) + du.memory_used_bytes
        s = Sample(start=base_t, time=now, cpu_percent=cpu_pct, gpu_percent=gpu, processes=procs,
                   net_bytes_per_s=net_rate, gpu_memory_bytes=mem)
        new_base = {"last_sample_at": now if cpu_ns is not None else row.get("last_sample_at"),
                    "last_cpu_ns": cpu_ns if cpu_ns is not None else row.get("last_cpu_ns"),
                    "last_net_bytes": net_bytes}
        return s, new_base

    # -- actions ----------------------------------------------------------------------------
    def _owner(self, rec: ContainerRecord) -> Caller | None:
        try:
            return caller_from_uid(rec.uid, None, self.ctx.config.admin_group)
        except DS01Error:
            return None

    def _carry_out(self, rec: ContainerRecord, a: Action, now: float) -> None:
        if a.kind == "warn":
            ev = {"level": a.level, "of": a.of, "action_at": round(a.at, 3), **_jsonable(a.detail)}
            self.ctx.events.emit("lifecycle.warn", user=rec.user, uid=rec.uid, target=rec.project,
                                 reason=a.reason, data=ev)
            text = self._warning_text(rec, a, now)
            self._pool.submit(self._tell, rec, text)
            return
        with self._inflight_lock:
            self._inflight.add(rec.id)
        self._pool.submit(self._act, rec, a)

    def _act(self, rec: ContainerRecord, a: Action) -> None:
        try:
            who = self._owner(rec)
            if who is None:
                log.warning("lifecycle: owner uid %s of %s has no account; acting as root", rec.uid, rec.docker_name)
                who = Caller(uid=rec.uid, gid=rec.uid, name=rec.user, home="/nonexistent", group=rec.user,
                             groups=frozenset(), is_admin=False)
            data = {**_jsonable(a.detail), "deadline": round(a.at, 3), "gpus": rec.gpus}
            if a.kind == "stop":
                self.containers.stop(who, who, rec.project, timeout=self.lc.stop_grace)
                data["stop_grace"] = self.lc.stop_grace
                self.ctx.events.emit("lifecycle.stop", user=rec.user, uid=rec.uid, target=rec.project,
                                     reason=a.reason, data=data)
                self._tell(rec, self._stopped_text(rec, a, who))
            elif a.kind == "remove":
                self.containers.remove(who, who, rec.project, force=False)
                self.ctx.events.emit("lifecycle.remove", user=rec.user, uid=rec.uid, target=rec.project,
                                     reason=a.reason, data=data)
        except (Conflict, NotFound) as e:  # it changed meanwhile (started, removed): nothing to do
            log.info("lifecycle: %s of %s skipped: %s", a.kind, rec.docker_name, e.message)
        except Exception as e:
            log.exception("lifecycle: %s of %s failed", a.kind, rec.docker_name)
            try:
                self.ctx.events.emit(f"lifecycle.{a.kind}", user=rec.user, uid=rec.uid, target=rec.project,
                                     result="error", reason=a.reason,
                                     data={"message": getattr(e, "message", None) or str(e)})
            except Exception:
                log.exception("could not record an event")
        finally:
            with self._inflight_lock:
                self._inflight.discard(rec.id)

    def _tell(self, rec: ContainerRecord, text: str) -> None:
        who = self._owner(rec)
        if who is None:
            return
        try:
            if self._notify_fn is not None:
                self._notify_fn(who, rec.project, text)
            else:
                from ds01.services.notify import notify

                notify(who, rec.project, text, self.ctx.config.containers.workspace_base, self.ctx.clock())
        except Exception:  # a failed message must not stop the loop
            log.exception("lifecycle: could not notify %s", rec.user)

    def _warning_text(self, rec: ContainerRecord, a: Action, now: float) -> str:
        when = f"at {_clock(a.at)} (in {format_duration(max(0.0, a.at - now))})"
        p = rec.project
        if a.reason == "idle":
            d = a.detail
            why = f"idle for {format_duration(d['idle_s'])} ({_signals(d.get('sample') or {})})"
            busy = "; others are waiting for GPUs, so idle limits are shorter now" if d.get("machine_busy") else ""
            return (f"warning {a.level}/{a.of}: your container '{p}' has been {why}; it will be stopped {when} "
                    f"unless it gets busy{busy}. To keep it: container-keepalive {p} --for 2h. "
                    f"Your files in /workspace stay where they are.")
        d = a.detail
        return (f"warning {a.level}/{a.of}: your container '{p}' has run {format_duration(d['running_s'])} of its "
                f"{format_duration(d['max_runtime'])} maximum; it will be stopped {when}. Save your work to "
                f"/workspace (checkpoints); an admin can grant an exemption ('ds01 admin exempt').")

    def _stopped_text(self, rec: ContainerRecord, a: Action, who: Caller) -> str:
        p = rec.project
        if a.reason == "idle":
            why = f"it was idle for {format_duration(a.detail.get('idle_s', 0))}"
        else:
            why = f"it reached its maximum runtime of {format_duration(a.detail.get('max_runtime', 0))}"
        gpus = ""
        if rec.gpus:
            hold = self._limits(rec).gpu_hold_after_stop
            gpus = f" Its GPUs are kept for you for {format_duration(hold)}."
        return (f"your container '{p}' was stopped because {why}.{gpus} Start it again with "
                f"'container-start {p}'; your files in /workspace are untouched.")

    # -- keepalive and exemptions (API) ------------------------------------------------------
    def keepalive(self, actor: Caller, who: Caller, ref: str, seconds: float | None) -> dict[str, Any]:
        lc = self.lc
        d = lc.keepalive_default if seconds is None else float(seconds)
        if d <= 0:
            raise InvalidInput("a keepalive needs a positive duration", "e.g. --for 2h")
        if d > lc.keepalive_max + 1e-9:
            raise PolicyDenied(f"a keepalive can last at most {format_duration(lc.keepalive_max)}; you asked for "
                               f"{format_duration(d)}", "ask an admin for an exemption if you need longer")
        rec = self.containers._sync(self.containers.resolve(who, ref))
        if rec.status != "running":
            raise Conflict(f"the container of {rec.project!r} is not running ({rec.status})",
                           "a keepalive only postpones the idle stop of a running container")
        now = self.ctx.clock()
        until = now + d
        with self._lock:
            self.ctx.store.set_keepalive(rec.id, until)
        lim = self._limits(rec)
        self.ctx.emit("lifecycle.keepalive", who, rec.project, actor=actor,
                              data={"until": until, "seconds": d})
        started = rec.started_at if rec.started_at is not None else rec.created_at
        return {"project": rec.project, "user": rec.user, "keepalive_until": until, "seconds": d,
                "idle_timeout": lim.idle_timeout,
                "max_runtime_at": started + lim.max_runtime if lim.max_runtime > 0 else None}

    def exempt(self, actor: Caller, user: str, kind: str, seconds: float, reason: str | None) -> dict[str, Any]:
        if kind not in EXEMPT_KINDS:
            raise InvalidInput(f"unknown exemption kind {kind!r}", "use idle, runtime or all")
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise NotFound(f"no user named {user!r}") from None
        now = self.ctx.clock()
        until = now + float(seconds)
        ex_id = self.ctx.store.add_exemption(user, kind, until, reason, actor.name, now)
        self.ctx.events.emit("lifecycle.exempt", user=user, target=user, reason=reason,
                             data={"id": ex_id, "kind": kind, "until": until, "by": actor.name})
        return {"id": ex_id, "user": user, "kind": kind, "until": until, "reason": reason, "granted_by": actor.name}

    def exemptions(self, include_ended: bool = False) -> list[dict[str, Any]]:
        now = self.ctx.clock()
        rows = self.ctx.store.all_exemptions()
        out = []
        for r in rows:
            r["active"] = r["revoked_at"] is None and r["until"] > now
            if r["active"] or include_ended:
                out.append(r)
        return out

    def revoke(self, actor: Caller, ex_id: int) -> dict[str, Any]:
        row = self.ctx.store.unrevoked_exemption(ex_id)
        if row is None:
            raise NotFound(f"no active exemption {ex_id}", "'ds01 admin exempt --list' shows them")
        self.ctx.store.revoke_exemption(ex_id, self.ctx.clock())
        self.ctx.events.emit("lifecycle.unexempt", user=row["user"], target=row["user"],
                             data={"id": ex_id, "by": actor.name})
        return {"revoked": ex_id}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _signals(s: dict[str, Any]) -> str:
    parts = []
    if s.get("cpu_percent") is not None:
        parts.append(f"CPU {s['cpu_percent']:.1f}%")
    parts.append("GPU unknown" if s.get("gpu_percent") is None else f"GPU {s['gpu_percent']:.0f}%")
    if s.get("processes") is not None:
        parts.append(f"{s['processes']} program(s) running")
    return ", ".join(parts)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float):
            v = round(v, 3)
        out[k] = v
    return out
