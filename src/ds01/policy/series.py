"""Time series for the charts (issue 16 item 6): pure bucketing, no I/O, no clock.

* ``UtilHistory``: a bounded per-device utilization history, fed with samples (device, time,
  percent) and kept as fixed buckets (default 5 min × 24 h = 288 per device): each bucket holds
  the sum and count of its samples, so its value is their mean. Memory is bounded by
  devices × buckets whatever the sample rate; older buckets fall off.
* ``segments`` / ``occupancy``: allocation records (start, end or None while open) clipped to a
  window, and the fraction of each bucket during which a device was held (exact, from records).
* ``sparkline``: values 0..100 as block characters for the terminal dashboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

STEP = 300.0  # 5 min
SPAN = 86400.0  # 24 h
BLOCKS = "▁▂▃▄▅▆▇█"


def bucket_of(t: float, step: float = STEP) -> int:
    """The bucket number of time ``t`` (bucket k covers [k·step, (k+1)·step))."""
    return int(math.floor(t / step))


def window(now: float, span: float = SPAN, step: float = STEP) -> tuple[float, float]:
    """[since, until) aligned to buckets: ``until`` is the end of the bucket ``now`` is in, so the
    last bucket is the current (partial) one and the window holds span/step buckets."""
    until = (bucket_of(now, step) + 1) * step
    return until - span, until


class UtilHistory:
    """Per-device bounded history of sampled utilization. Not thread-safe (the caller locks)."""

    def __init__(self, step: float = STEP, span: float = SPAN):
        if step <= 0 or span < step:
            raise ValueError("step must be > 0 and span >= step")
        self.step = step
        self.size = int(round(span / step))
        self._b: dict[str, dict[int, list[float]]] = {}  # uuid → bucket → [sum, count]

    def add(self, uuid: str, t: float, percent: float | None) -> None:
        """One sample; ``None`` (no counter, e.g. a MIG instance) is not recorded."""
        if percent is None or percent != percent:
            return
        k = bucket_of(t, self.step)
        b = self._b.setdefault(uuid, {})
        cell = b.get(k)
        if cell is None:
            b[k] = [float(percent), 1.0]
            self._trim(b, k)
        else:
            cell[0] += float(percent)
            cell[1] += 1.0

    def _trim(self, b: dict[int, list[float]], newest: int) -> None:
        lo = newest - self.size + 1
        for k in [k for k in b if k < lo]:
            del b[k]

    def devices(self) -> list[str]:
        return list(self._b)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop devices no longer in the inventory."""
        keep = set(keep)
        for u in [u for u in self._b if u not in keep]:
            del self._b[u]

    def series(self, uuid: str, until: float) -> list[float | None]:
        """The ``size`` bucket means ending with the bucket before ``until`` (oldest first);
        None where no sample fell in a bucket."""
        b = self._b.get(uuid, {})
        last = bucket_of(until, self.step) - 1
        out: list[float | None] = []
        for k in range(last - self.size + 1, last + 1):
            cell = b.get(k)
            out.append(None if cell is None else cell[0] / cell[1])
        return out

    def buckets(self) -> int:
        return sum(len(b) for b in self._b.values())


@dataclass(frozen=True)
class Segment:
    """One allocation of one device, clipped to a chart window."""

    device: str
    start: float
    end: float
    user: str
    project: str
    equivalents: float
    open: bool  # still held at the window's end

    def to_dict(self) -> dict:
        return {"device": self.device, "start": self.start, "end": self.end, "user": self.user,
                "project": self.project, "equivalents": self.equivalents, "open": self.open}


def segments(rows: Iterable[dict], since: float, until: float) -> list[Segment]:
    """Allocation rows (``device, user, project, equivalents, start, end``; ``end`` None while
    held) clipped to [since, until), those outside left out; sorted by device, then start."""
    out = []
    for r in rows:
        end = r.get("end")
        s, e = max(float(r["start"]), since), until if end is None else min(float(end), until)
        if e <= s:
            continue
        out.append(Segment(r["device"], s, e, r["user"], r["project"], float(r["equivalents"]),
                           end is None or float(end) >= until))
    return sorted(out, key=lambda g: (g.device, g.start, g.end))


def occupancy(segs: Sequence[Segment], since: float, until: float, step: float = STEP) -> list[float]:
    """Fraction (0..1) of each bucket of [since, until) that the segments cover (overlapping
    segments of one device do not count twice: capped at 1)."""
    n = max(0, int(round((until - since) / step)))
    out = [0.0] * n
    for g in segs:
        i0, i1 = int((g.start - since) // step), int(math.ceil((g.end - since) / step))
        for i in range(max(0, i0), min(n, i1)):
            lo, hi = since + i * step, since + (i + 1) * step
            out[i] += max(0.0, min(hi, g.end) - max(lo, g.start)) / step
    return [min(1.0, round(v, 6)) for v in out]


def downsample(values: Sequence[float | None], n: int) -> list[float | None]:
    """``values`` in ``n`` equal groups, each the mean of its known values (None if none)."""
    if n <= 0 or not values:
        return []
    out: list[float | None] = []
    for i in range(n):
        part = [v for v in values[i * len(values) // n:(i + 1) * len(values) // n] if v is not None]
        out.append(sum(part) / len(part) if part else None)
    return out


def sparkline(values: Sequence[float | None], width: int = 24, top: float = 100.0) -> str:
    """Values (0..top) as ``width`` block characters, a space where nothing is known."""
    chars = []
    for v in downsample(values, width):
        if v is None:
            chars.append(" ")
        else:
            i = int(round(max(0.0, min(top, v)) / top * (len(BLOCKS) - 1)))
            chars.append(BLOCKS[i])
    return "".join(chars)
