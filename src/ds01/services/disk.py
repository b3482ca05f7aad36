"""Disk use per user (issue 16): workspace bytes, image bytes, the ``max_workspace_bytes`` quota,
and the over-quota warning.

Bounded in time: nothing here walks a tree on a request. ``tick`` (the daemon's periodic loop)
only decides who is due, at most every ``disk.sample_interval`` per user, and hands them to one
background thread; a walk stops after ``disk.walk_budget`` seconds or ``disk.max_entries``
entries (the figure is then a lower bound, marked ``partial``). Requests (``check-limits``, the
dashboard) read the last measurement and ask for a fresh one when it is missing or old.

Workspace bytes are what ``du`` counts (allocated blocks, hard links once) under the user's
workspace base, walked as root with directory fds and ``O_NOFOLLOW`` on one filesystem, so a
symlink the user plants cannot take the walk elsewhere. Where the workspace filesystem enforces
user quotas (``policy/disk.quota_support``), the daemon sets the user's hard limit with
``setquota`` (Debian's ``quota`` package; ext4 and XFS), and the quota's own count (the user's
bytes on that whole filesystem) is shown beside the walk's. Image bytes: the user's images, shared
layers counted once (from the engine's image history); where the backend has no history, each
image's own size.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ds01 import labels
from ds01.errors import DS01Error
from ds01.policy import disk as policy
from ds01.services.identity import Caller, caller_from_uid
from ds01.services.workspace import base_for
from ds01.units import format_size

log = logging.getLogger("ds01d")

MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class Walk:
    bytes: int
    entries: int
    partial: bool  # stopped by the time or entry budget, or parts could not be read
    seconds: float


def walk_bytes(path: str, budget_s: float, max_entries: int) -> Walk:
    """Allocated bytes under ``path`` (``du -s``: st_blocks, hard links once, not crossing into
    other filesystems, symlinks not followed), within ``budget_s`` seconds and ``max_entries``."""
    t0 = time.monotonic()
    deadline = t0 + budget_s
    total, entries, partial = 0, 0, False
    seen: set[tuple[int, int]] = set()
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return Walk(0, 0, True, 0.0)
    dev = os.fstat(top).st_dev
    stack = [top]
    try:
        while stack:
            fd = stack.pop()
            try:
                st = os.fstat(fd)
                total += st.st_blocks * 512
                with os.scandir(fd) as it:
                    for e in it:
                        entries += 1
                        if entries >= max_entries or (entries % 512 == 0 and time.monotonic() > deadline):
                            partial = True
                            break
                        try:
                            s = e.stat(follow_symlinks=False)
                        except OSError:
                            partial = True
                            continue
                        if s.st_dev != dev:
                            continue  # a mount point below: another filesystem's bytes
                        if stat.S_ISDIR(s.st_mode):
                            try:
                                stack.append(os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                     | os.O_CLOEXEC, dir_fd=fd))
                            except OSError:
                                partial = True
                            continue
                        if s.st_nlink > 1:
                            if (s.st_dev, s.st_ino) in seen:
                                continue
                            seen.add((s.st_dev, s.st_ino))
                        total += s.st_blocks * 512
            except OSError:
                partial = True
            finally:
                os.close(fd)
            if partial and (entries >= max_entries or time.monotonic() > deadline):
                break
    finally:
        for fd in stack:
            os.close(fd)
    return Walk(total, entries, partial, round(time.monotonic() - t0, 3))


def _tool(argv: list[str], timeout: float = 15) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/",
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None


class Quotas:
    """The quota tools (``quotaon -p``, ``setquota``, ``repquota``), one call per mount or user;
    replaceable in tests."""

    def quotas_on(self, mount_point: str) -> bool | None:
        p = _tool(["quotaon", "-p", "-u", mount_point])
        if p is None:
            return None
        text = (p.stdout + p.stderr).lower()
        if " is on" in text:
            return True
        return False if (" is off" in text or "not found or has no quota" in text) else None

    def set(self, uid: int, limit: int, mount_point: str) -> str | None:
        """None when set, else the tool's message."""
        p = _tool(policy.setquota_argv(uid, limit, mount_point))
        if p is None:
            return "setquota is not installed (Debian package 'quota')"
        if p.returncode != 0:
            return (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return None

    def report(self, mount_point: str) -> dict[int, tuple[int, int]]:
        p = _tool(["repquota", "-u", "-n", "-p", "-O", "csv", mount_point])
        return policy.parse_repquota_csv(p.stdout) if p is not None and p.returncode == 0 else {}


class DiskService:
    def __init__(self, ctx, limits_for: Callable[[Caller], Any], notify_fn: Callable | None = None,
                 quotas: Quotas | None = None, mountinfo: Path = MOUNTINFO):
        self.ctx = ctx
        self._limits_for = limits_for
        self._notify_fn = notify_fn
        self.quotas = quotas or Quotas()
        self._mountinfo = mountinfo
        self._lock = threading.Lock()
        self._m: dict[int, dict[str, Any]] = {}  # uid -> the last measurement (a view, see _measure)
        self._next: dict[int, float] = {}  # uid -> when it is due again
        self._pending: set[int] = set()
        self._layers: dict[str, list[tuple[str, int]] | int] = {}  # image id -> layers (ids are immutable)
        self._set: dict[tuple[int, str], int] = {}  # (uid, mount) -> the hard limit DS01 set
        self._warned: dict[int, float] = {}
        self._cfg_seen: Any = ctx.config  # another object later = a reload
        self._q: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        # beside the pinned mounts in the daemon's root-only state dir; None (no state dir) in tests
        mounts_dir = getattr(ctx, "mounts_dir", None)
        self._set_file = Path(mounts_dir).parent / "disk-quotas.json" if mounts_dir else None
        self._load_set()

    @property
    def cfg(self):
        return self.ctx.config.disk

    # -- scheduling (cheap: called from the periodic tick) -----------------------------------
    def tick(self) -> int:
        """Queue every user with a live container whose measurement is due (and everyone after a
        reload, so a changed ``max_workspace_bytes`` is applied); returns how many were queued."""
        now = self.ctx.clock()
        if self._cfg_seen is not self.ctx.config:  # reloaded: limits may have changed
            self._cfg_seen = self.ctx.config
            with self._lock:
                self._next = {u: now for u in self._next}
        uids = {r.uid for r in self.ctx.store.live_containers()} | {u for u, _ in self._set}
        n = 0
        for uid in uids:
            if self._next.get(uid, 0.0) <= now:
                n += self.request(uid)
        return n

    def request(self, uid: int) -> bool:
        """Measure ``uid`` soon, in the background (no-op when already queued)."""
        with self._lock:
            if uid in self._pending:
                return False
            self._pending.add(uid)
            self._next[uid] = self.ctx.clock() + self.cfg.sample_interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._worker, name="ds01d-disk", daemon=True)
                self._thread.start()
        self._q.put(uid)
        return True

    def _worker(self) -> None:
        while True:
            uid = self._q.get()
            if uid is None:
                return
            try:
                self.measure(uid)
            except Exception:
                log.exception("disk: measuring uid %s failed", uid)
            finally:
                with self._lock:
                    self._pending.discard(uid)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Until queued measurements are done (tests, admin tools)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.02)
        return False

    # -- measuring (the background thread) ---------------------------------------------------
    def _mounts(self) -> list[policy.Mount]:
        try:
            return policy.parse_mountinfo(self._mountinfo.read_text())
        except OSError:
            return []

    def support(self, path: str) -> policy.Support:
        m = policy.mount_of(os.path.realpath(path), self._mounts())
        on = None
        if self.cfg.quotas and m is not None and m.fstype in policy.QUOTA_FILESYSTEMS:
            on = self.quotas.quotas_on(m.point)
        return policy.quota_support(m, on, self.cfg.quotas)

    def measure(self, uid: int) -> dict[str, Any]:
        """Measure one user now (walk, images, quota), apply the quota, warn when over."""
        who = caller_from_uid(uid, None, self.ctx.config.admin_group)
        lim = self._limits_for(who)
        limit = int(getattr(lim, "max_workspace_bytes", 0) or 0)
        base, root = base_for(self.ctx.config.containers.workspace_base, who)
        # a base that is a symlink is walked where it leads only inside the trust root (as
        # ensure_workspace allows); the walk itself never follows a link below it
        real, real_root = os.path.realpath(base), os.path.realpath(root)
        exists = os.path.isdir(real)
        inside = exists and os.path.commonpath([real, real_root]) == real_root
        w = walk_bytes(real, self.cfg.walk_budget, self.cfg.max_entries) if inside else \
            Walk(0, 0, exists, 0.0)
        sup = self.support(base if exists else os.path.dirname(base.rstrip("/")) or "/")
        quota_note = self._apply_quota(who, limit, sup)
        quota_used = None
        if sup.enforced and sup.mount:
            quota_used = self.quotas.report(sup.mount).get(uid, (None, 0))[0]
        imgs, img_bytes, shared_once = self._images(uid)
        view = {
            "workspace": base, "workspace_bytes": w.bytes, "partial": w.partial, "entries": w.entries,
            "walk_s": w.seconds, "measured_at": self.ctx.clock(), "quota_used_bytes": quota_used,
            "images": imgs, "image_bytes": img_bytes, "shared_layers_counted_once": shared_once,
            "enforced": sup.enforced and quota_note is None,
            "enforcement": quota_note or sup.why,
        }
        with self._lock:
            self._m[uid] = view
        self._maybe_warn(who, limit, view)
        return view

    def _images(self, uid: int) -> tuple[int, int, bool]:
        rt = self.ctx.runtime
        try:
            infos = rt.image_list(labels.managed(self.ctx.instance, uid))
        except (DS01Error, AttributeError) as e:
            log.warning("disk: cannot list the images of uid %s: %s", uid, getattr(e, "message", e))
            return 0, 0, False
        per: dict[str, list[tuple[str, int]] | int] = {}
        for i in infos:
            if i.id not in self._layers:
                hist = None
                try:
                    hist = rt.image_history(i.id) if hasattr(rt, "image_history") else None
                except DS01Error:
                    pass
                self._layers[i.id] = policy.history_layers(hist) if hist else int(i.size)
            per[i.id] = self._layers[i.id]
        if len(self._layers) > 4096:
            self._layers = dict(per)
        return len(per), policy.image_bytes(per), all(not isinstance(v, int) for v in per.values())

    # -- the quota ---------------------------------------------------------------------------
    def _apply_quota(self, who: Caller, limit: int, sup: policy.Support) -> str | None:
        """Set (or clear) the user's hard limit; the message when setting it failed."""
        if not sup.enforced or not sup.mount:
            return None
        key = (who.uid, sup.mount)
        have = self._set.get(key)
        if limit <= 0 and have is None:
            return None  # no limit, and none of ours to clear: an admin's own quota stays
        if have == limit:
            return None
        err = self.quotas.set(who.uid, max(limit, 0), sup.mount)
        if err is not None:
            log.warning("disk: setting the quota of %s on %s failed: %s", who.name, sup.mount, err)
            return f"not enforced here: setquota failed on {sup.mount}: {err}"
        if limit > 0:
            self._set[key] = limit
        else:
            self._set.pop(key, None)
        self._save_set()
        self.ctx.events.emit("disk.quota", user=who.name, uid=who.uid, target=who.name,
                             data={"mount": sup.mount, "limit": limit, "was": have})
        return None

    def _load_set(self) -> None:
        # which quotas DS01 set survives a restart, so an unset limit clears ours (never an admin's)
        if self._set_file is None:
            return
        try:
            rows = json.loads(self._set_file.read_text())
            self._set = {(int(r["uid"]), str(r["mount"])): int(r["limit"]) for r in rows}
        except (OSError, ValueError, KeyError, TypeError):
            self._set = {}

    def _save_set(self) -> None:
        if self._set_file is None:
            return
        tmp = self._set_file.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump([{"uid": u, "mount": m, "limit": v} for (u, m), v in self._set.items()], f)
            os.replace(tmp, self._set_file)
        except OSError as e:
            log.warning("disk: cannot record the quotas set: %s", e)

    # -- over the limit ----------------------------------------------------------------------
    def _used(self, view: dict[str, Any]) -> int:
        q = view.get("quota_used_bytes")
        return int(q) if q is not None and view.get("enforced") else int(view.get("workspace_bytes") or 0)

    def _maybe_warn(self, who: Caller, limit: int, view: dict[str, Any]) -> None:
        used = self._used(view)
        now = self.ctx.clock()
        over = policy.over_limit(used, limit)
        if not over:
            self._warned.pop(who.uid, None)
            return
        if not policy.should_warn(over, self._warned.get(who.uid), now, self.cfg.warn_interval):
            return
        running = [r for r in self.ctx.store.live_containers(who.uid) if r.status == "running"]
        if not running:
            return
        self._warned[who.uid] = now
        how = ("new writes fail with 'Disk quota exceeded'" if view["enforced"]
               else "the limit is not enforced on this filesystem, but please stay under it")
        text = (f"warning: your workspace uses {format_size(used)}, over your limit of {format_size(limit)} "
                f"(max_workspace_bytes); {how}. Delete or move files under {view['workspace']} "
                "('check-limits' shows the figures).")
        for rec in running:
            self.ctx.events.emit("disk.warn", user=who.name, uid=who.uid, target=rec.project, reason="over quota",
                                 data={"used": used, "limit": limit, "enforced": view["enforced"]})
            self._tell(who, rec.project, text)

    def _tell(self, who: Caller, project: str, text: str) -> None:
        try:
            if self._notify_fn is not None:
                self._notify_fn(who, project, text)
            else:
                from ds01.services.notify import notify

                notify(who, project, text, self.ctx.config.containers.workspace_base, self.ctx.clock())
        except Exception:  # a failed message must not stop the measurements
            log.exception("disk: could not notify %s", who.name)

    # -- views (cheap: requests) -------------------------------------------------------------
    def usage(self, who: Caller, lim: Any) -> dict[str, Any]:
        """``who``'s last measurement with the limit, for ``check-limits``; asks for a fresh one
        (in the background) when there is none or it is older than ``disk.sample_interval``."""
        with self._lock:
            view = dict(self._m.get(who.uid) or {})
        now = self.ctx.clock()
        if not view or now - view.get("measured_at", 0) >= self.cfg.sample_interval:
            self.request(who.uid)
        limit = int(getattr(lim, "max_workspace_bytes", 0) or 0)
        if not view:
            return {"measured": False, "max_workspace_bytes": limit, "over": False,
                    "note": "not measured yet: measuring now in the background; ask again shortly"}
        used = self._used(view)
        return {**view, "measured": True, "age_s": round(now - view["measured_at"], 1),
                "max_workspace_bytes": limit, "used_bytes": used, "over": policy.over_limit(used, limit),
                "left_bytes": max(0, limit - used) if limit > 0 else None}

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """Every measured user's last figures (the dashboard)."""
        with self._lock:
            return {u: dict(v) for u, v in self._m.items()}

    def close(self) -> None:
        self._q.put(None)
