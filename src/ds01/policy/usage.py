"""Usage accounting from records, not samples: pure functions over time intervals.

GPU-hours are GPU-equivalents × hours of each allocation row (start → end, or now while open),
clipped to the report window. Container-hours are each container's life (created → ended, or now)
clipped to the window. Both are exact sums over the records, so a report over any window equals
the records themselves (no sampling gaps).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from typing import Iterable, Literal

By = Literal["user", "group", "project", "node"]
# "node" (cluster mode, issue 18): GPU-hours by the node of each device, container-hours by the
# node each container ran on; on one server everything is "(this server)"
BY_VALUES: tuple[str, ...] = ("user", "group", "project", "node")
THIS_SERVER = "(this server)"


def overlap(start: float, end: float | None, lo: float, hi: float) -> float:
    """Seconds of [start, end) inside [lo, hi); an open interval (end None) runs to ``hi``."""
    e = hi if end is None else min(end, hi)
    s = max(start, lo)
    return max(0.0, e - s)


@dataclass(frozen=True)
class AllocationInterval:
    user: str
    project: str
    equivalents: float
    start: float
    end: float | None = None
    device: str = ""


@dataclass(frozen=True)
class ContainerInterval:
    user: str
    project: str
    start: float
    end: float | None = None
    peak_memory_bytes: int | None = None
    node: str = ""  # cluster mode: where it ran


@dataclass
class UsageRow:
    key: str
    gpu_hours: float = 0.0
    container_hours: float = 0.0
    peak_memory_bytes: int | None = None
    allocations: int = 0
    containers: int = 0
    users: set[str] = field(default_factory=set)

    def to_dict(self, by: str) -> dict:
        d = asdict(self)
        d[by] = d.pop("key")
        d["users"] = sorted(self.users)
        d["gpu_hours"] = round(self.gpu_hours, 6)
        d["container_hours"] = round(self.container_hours, 6)
        return d


def node_of_device(device: str) -> str:
    """The node of a cluster device key (``ds01n1/gpu0``); "" for this server's devices."""
    from ds01.policy.placement import parse_device_key

    parsed = parse_device_key(device)
    return parsed[0] if parsed else ""


def key_of(by: str, user: str, project: str, groups: dict[str, str], node: str = "") -> str:
    if by == "node":
        return node or THIS_SERVER
    if by == "user":
        return user
    if by == "project":
        return f"{user}/{project}"
    if by == "group":
        return groups.get(user) or "(no group)"
    raise ValueError(f"--by must be one of {', '.join(BY_VALUES)}")


def account(allocations: Iterable[AllocationInterval], containers: Iterable[ContainerInterval], since: float,
            until: float, by: str = "user", groups: dict[str, str] | None = None) -> list[UsageRow]:
    """Usage per user, group (``groups`` maps user → group) or project in [since, until).

    Rows sorted by GPU-hours then container-hours, largest first. Only records that overlap the
    window count (an allocation outside it contributes nothing and is not counted)."""
    if by not in BY_VALUES:
        raise ValueError(f"--by must be one of {', '.join(BY_VALUES)}")
    if until < since:
        raise ValueError("the window ends before it starts")
    groups = groups or {}
    rows: dict[str, UsageRow] = {}

    def row(user: str, project: str, node: str = "") -> UsageRow:
        k = key_of(by, user, project, groups, node)
        r = rows.get(k)
        if r is None:
            r = rows[k] = UsageRow(k)
        r.users.add(user)
        return r

    for a in allocations:
        secs = overlap(a.start, a.end, since, until)
        if secs <= 0:
            continue
        r = row(a.user, a.project, node_of_device(a.device))
        r.gpu_hours += a.equivalents * secs / 3600.0
        r.allocations += 1
    for c in containers:
        secs = overlap(c.start, c.end, since, until)
        if secs <= 0:
            continue
        r = row(c.user, c.project, c.node)
        r.container_hours += secs / 3600.0
        r.containers += 1
        if c.peak_memory_bytes is not None:
            r.peak_memory_bytes = max(r.peak_memory_bytes or 0, c.peak_memory_bytes)
    return sorted(rows.values(), key=lambda r: (-r.gpu_hours, -r.container_hours, r.key))


def totals(rows: Iterable[UsageRow]) -> dict:
    rows = list(rows)
    peaks = [r.peak_memory_bytes for r in rows if r.peak_memory_bytes is not None]
    return {"gpu_hours": round(sum(r.gpu_hours for r in rows), 6),
            "container_hours": round(sum(r.container_hours for r in rows), 6),
            "peak_memory_bytes": max(peaks) if peaks else None,
            "allocations": sum(r.allocations for r in rows), "containers": sum(r.containers for r in rows)}


CSV_COLUMNS = ("gpu_hours", "container_hours", "peak_memory_bytes", "allocations", "containers")


def to_csv(rows: list[dict], by: str) -> str:
    """CSV of report rows (dicts from ``UsageRow.to_dict``), with a header; numbers unformatted so
    spreadsheets and scripts sum them exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([by, *CSV_COLUMNS])
    for r in rows:
        w.writerow([r[by], *("" if r.get(c) is None else r[c] for c in CSV_COLUMNS)])
    return buf.getvalue()


def parse_since(text: str | None, now: float, default: float | None = None) -> float:
    """A window start: a duration back from now (``2h``, ``30d``, ``1h30m``), an ISO date/time
    (``2024-05-01``, ``2024-05-01T12:00``, local time unless it has an offset), or a Unix time."""
    import datetime as dt

    from ds01.units import parse_duration

    if text is None or text == "":
        if default is None:
            raise ValueError("a start time is required")
        return default
    t = text.strip()
    try:
        v = float(t)
    except ValueError:
        pass
    else:
        if v >= 1e9:  # a Unix time
            return v
    try:
        return now - parse_duration(t)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(t).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use a duration back from now ('2h', '30d') "
                         "or a date ('2024-05-01', '2024-05-01T12:00')") from None
