"""Disk decisions (issue 16), pure: where a workspace lives (which mount), whether that mount can
enforce ``max_workspace_bytes`` with a user quota, the quota commands, image bytes with shared
layers counted once, and when a user over the limit is warned.

The I/O (reading mountinfo, walking trees, running ``setquota``/``repquota``, engine calls) is
``services/disk.py``; everything it decides is here, so it is unit-tested without a filesystem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

# filesystems whose user quotas DS01 sets (quota-tools' setquota handles both)
QUOTA_FILESYSTEMS = ("ext4", "xfs")
# mount options that turn user quota accounting on (ext4: usrquota/quota; XFS: uquota/usrquota/uqnoenforce)
_USER_QUOTA_OPTS = {"usrquota", "quota", "uquota", "usrjquota"}
_XFS_NOENFORCE = {"uqnoenforce", "qnoenforce"}


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``: where, what filesystem, from which device, options
    (per-mount and per-superblock together)."""

    point: str
    fstype: str
    source: str
    options: frozenset[str]


def _unescape(s: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 …)
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts in order (a later mount on the same point hides an earlier one)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if "-" not in parts:
            continue
        sep = parts.index("-")
        if sep < 6 or len(parts) < sep + 3:
            continue
        opts = set(parts[5].split(",")) | set(parts[sep + 3].split(",") if len(parts) > sep + 3 else ())
        out.append(Mount(point=_unescape(parts[4]), fstype=parts[sep + 1], source=_unescape(parts[sep + 2]),
                         options=frozenset(o.split("=", 1)[0] for o in opts if o)))
    return out


def mount_of(path: str, mounts: Iterable[Mount]) -> Mount | None:
    """The mount a (resolved, absolute) path is on: the longest mount point above it; among
    mounts on the same point, the last one (it hides the others)."""
    best: Mount | None = None
    for m in mounts:
        p = m.point.rstrip("/") or "/"
        if path == p or path.startswith(p + "/") or p == "/":
            if best is None or len(p) >= len(best.point.rstrip("/") or "/"):
                best = m
    return best


@dataclass(frozen=True)
class Support:
    """Whether ``max_workspace_bytes`` can be enforced on a mount; ``why`` says it in words."""

    enforced: bool
    why: str
    mount: str | None = None


def quota_support(m: Mount | None, quotas_on: bool | None, enabled: bool = True) -> Support:
    """From the mount and whether the kernel reports user quotas on for it (``quotaon -p``;
    None = could not tell, e.g. the tools are missing)."""
    if not enabled:
        return Support(False, "not enforced here: quotas are switched off (disk.quotas: false)", m and m.point)
    if m is None:
        return Support(False, "not enforced here: the workspace's filesystem was not found", None)
    if m.fstype not in QUOTA_FILESYSTEMS:
        return Support(False, f"not enforced here: {m.fstype} at {m.point} has no user quotas "
                              "DS01 can set (ext4 or XFS needed)", m.point)
    if not (m.options & _USER_QUOTA_OPTS) or (m.fstype == "xfs" and m.options & _XFS_NOENFORCE):
        return Support(False, f"not enforced here: {m.point} ({m.fstype}) is not mounted with usrquota", m.point)
    if quotas_on is None:
        return Support(False, f"not enforced here: cannot tell whether quotas are on for {m.point} "
                              "(install Debian's 'quota' package)", m.point)
    if not quotas_on:
        return Support(False, f"not enforced here: user quotas are off on {m.point} (ext4: "
                              f"'quotacheck -cum {m.point} && quotaon -u {m.point}'; or the kernel has "
                              "no quota support)", m.point)
    return Support(True, f"enforced: {m.fstype} user quota on {m.point}", m.point)


def setquota_argv(uid: int, limit_bytes: int, mount_point: str) -> list[str]:
    """``setquota`` for a hard block limit (1 KiB blocks, rounded up; 0 = no limit). No soft
    limit (no grace periods to explain) and no inode limit."""
    kib = 0 if limit_bytes <= 0 else -(-limit_bytes // 1024)
    return ["setquota", "-u", str(uid), "0", str(kib), "0", "0", mount_point]


def parse_repquota_csv(text: str) -> dict[int, tuple[int, int]]:
    """``repquota -u -n -p -O csv MOUNT`` → uid → (bytes used, hard limit bytes; 0 = none)."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 6 or not parts[0].lstrip("#").isdigit():
            continue
        try:
            uid = int(parts[0].lstrip("#"))
            used, hard = int(parts[3]) * 1024, int(parts[5]) * 1024  # 1 KiB blocks
        except ValueError:
            continue
        out[uid] = (used, hard)
    return out


def history_layers(history: list[dict]) -> list[tuple[str, int]]:
    """An image's layers as (key, bytes), base first, from the engine's history (newest first).
    A layer's key hashes its own step and every step below it, so two images share a key exactly
    when they share that layer and everything under it (as the engine's chain ids do). Steps of
    size 0 (metadata) add nothing and are left out."""
    out: list[tuple[str, int]] = []
    h = hashlib.sha256()
    for step in reversed(history):
        size = int(step.get("Size") or 0)
        h.update(f"{step.get('Created')}\0{step.get('CreatedBy')}\0{size}\n".encode())
        if size > 0:
            out.append((h.hexdigest(), size))
    return out


def image_bytes(per_image: dict[str, list[tuple[str, int]] | int]) -> int:
    """Bytes of a set of images, shared layers counted once. An image given as a plain int
    (its layers unknown) counts its own whole size."""
    seen: dict[str, int] = {}
    flat = 0
    for layers in per_image.values():
        if isinstance(layers, int):
            flat += layers
            continue
        for key, size in layers:
            seen[key] = size
    return flat + sum(seen.values())


def over_limit(used: int | None, limit: int) -> bool:
    return limit > 0 and used is not None and used > limit


def should_warn(over: bool, last_warned: float | None, now: float, interval: float) -> bool:
    """Warn when over, and again every ``interval`` while it stays over (like an idle warning,
    which repeats at its warning points)."""
    return over and (last_warned is None or now - last_warned >= interval)
