"""Pure fair-share queue: the order waiting GPU requests are served in, and which can start now.

Fair share. A user's recent use is their GPU-hours, each hour weighted down exponentially by its
age (``decay``, half-life from config, e.g. 7 days). The score is that usage divided by the user's
``priority_weight`` (``fair_share_score``); lower is served first, FIFO on ties.

Anti-starvation (aging). The queue sorts on
``effective = score - waited_seconds / aging``: every ``aging`` seconds spent waiting is worth one
GPU-hour (per unit of weight) of forgiven usage. Decayed usage is bounded (at most
``total GPU-equivalents x half_life / ln 2`` GPU-hours), so scores are bounded, and an entry that
has waited ``max_score x aging`` seconds is ahead of every request that arrives after that; the
finite set still ahead of it is served first (see reservation), so every request reaches the head.
``aging=None`` turns aging off (pure fair share, which can starve a heavy user under steady load).

Head-of-line reservation (``next_servable``). Entries are walked in order. An entry that fits in
what is free and not reserved is served. An entry that does not fit reserves every currently free
device it could use (its ``candidates``: whole GPUs for ``--gpus``, instances of its profile for
``--gpu-profile``, any MIG instance for ``--mig``); entries behind it may only use devices no
earlier waiting entry could use. So a 4-GPU request waiting for its last GPU keeps the three that
are free, instead of watching 1-GPU requests behind it take each GPU as it frees (starvation by
small jobs); a MIG request behind it can still start on a MIG instance. Together with aging this
means: whenever capacity frees up and nothing new is started outside the queue, the head is
served, then the next, and so on, so every queued request is eventually served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ds01.models.gpu import Inventory
from ds01.policy.allocation import Allocation, Denial, GpuRequest, candidates, decide, pick_devices, validate
from ds01.policy.limits import EffectiveLimits

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class UsageRecord:
    """One allocation interval: ``equivalents`` GPU-equivalents held from ``start`` to ``end``
    (epoch seconds; ``end=None`` = still held)."""

    user: str
    start: float
    end: float | None
    equivalents: float


@dataclass(frozen=True)
class QueueEntry:
    """A waiting request. ``seq`` is the queue's insertion counter (the FIFO tie-break when two
    entries were enqueued in the same instant)."""

    id: str
    user: str
    request: GpuRequest
    enqueued_at: float
    seq: int = 0


def decay(usage_records: Iterable[UsageRecord], now: float, half_life: float) -> dict[str, float]:
    """Decayed GPU-hours per user at ``now``.

    Each instant of use at time t counts ``equivalents x 2^-((now - t) / half_life)``; this is the
    exact integral over each interval (clipped to ``now``), so the result does not depend on how
    often it is computed. ``half_life=math.inf`` gives plain GPU-hours.
    """
    if not half_life > 0:
        raise ValueError("half_life must be positive")
    out: dict[str, float] = {}
    lam = 0.0 if math.isinf(half_life) else math.log(2) / half_life
    exp, get = math.exp, out.get  # (the tick decays every allocation of the window: kept tight)
    for r in usage_records:
        end = r.end
        if end is None or now < end:  # end = min(end, now), start = min(start, end), as min() picks
            end = now
        start = r.start
        if end < start:
            start = end
        eq = r.equivalents
        if end <= start or eq <= 0:
            out.setdefault(r.user, 0.0)
            continue
        if lam == 0.0:
            seconds = end - start
        else:
            # integral_start^end e^{-lam (now - t)} dt = (e^{-lam (now-end)} - e^{-lam (now-start)}) / lam
            seconds = (exp(-lam * (now - end)) - exp(-lam * (now - start))) / lam
        out[r.user] = get(r.user, 0.0) + eq * seconds / SECONDS_PER_HOUR
    return out


def fair_share_score(decayed_gpu_hours: float, weight: float) -> float:
    """Lower is served first: decayed GPU-hours per unit of ``priority_weight``."""
    if not weight > 0:
        raise ValueError("priority_weight must be positive")
    return max(0.0, decayed_gpu_hours) / weight


def effective_score(
    entry: QueueEntry,
    usage: Mapping[str, float],
    weights: Mapping[str, float],
    now: float,
    aging: float | None,
) -> float:
    """The key ``order`` sorts on (see the module docstring for the aging rule)."""
    score = fair_share_score(usage.get(entry.user, 0.0), weights.get(entry.user, 1.0))
    if aging:
        score -= max(0.0, now - entry.enqueued_at) / aging
    return score


def order(
    queue_entries: Iterable[QueueEntry],
    usage: Mapping[str, float],
    weights: Mapping[str, float],
    now: float,
    aging: float | None,
) -> list[QueueEntry]:
    """Entries in serving order: lowest effective score first, then FIFO (enqueued_at, seq, id).

    ``usage`` is ``decay(...)`` output; users missing from ``usage`` have 0, from ``weights`` 1.0.
    Scores are rounded to 1e-9 so float noise never reorders genuinely tied entries.
    """
    if aging is not None and aging < 0:
        raise ValueError("aging must be positive (or None to disable)")
    # effective_score as one sort key per entry, each user's fair-share score computed once (the
    # same floats); the entry's position last keeps the sort stable for equal keys
    entries = list(queue_entries)
    scores = {u: fair_share_score(usage.get(u, 0.0), weights.get(u, 1.0)) for u in dict.fromkeys(e.user for e in entries)}
    if aging:
        keys = [(round(scores[e.user] - (now - e.enqueued_at if now > e.enqueued_at else 0.0) / aging, 9),
                 e.enqueued_at, e.seq, e.id, i) for i, e in enumerate(entries)]
    else:
        keys = [(round(scores[e.user], 9), e.enqueued_at, e.seq, e.id, i) for i, e in enumerate(entries)]
    keys.sort()
    return [entries[k[-1]] for k in keys]


LimitsFor = Callable[[QueueEntry], "tuple[EffectiveLimits, float] | None"]


def next_servable(
    ordered: Iterable[QueueEntry],
    inventory: Inventory,
    held: Mapping[str, object],
    limits_for: LimitsFor | None = None,
) -> list[tuple[QueueEntry, Allocation]]:
    """Which queued entries can start now, with their devices, in serving order.

    ``ordered`` is ``order(...)`` output and ``held`` every device held now. The allocations in the
    result never overlap each other or ``held``. Head-of-line reservation as in the module
    docstring.

    ``limits_for(entry)`` -> ``(limits, user_holding_equivalents)`` re-checks the quota (the user
    may have started other containers since queueing); an entry the quota now refuses is skipped
    without reserving anything (its own limit must not block others). Entries that are invalid
    on this inventory (the MIG layout changed) are skipped likewise; the caller should reject them.
    Without ``limits_for`` only capacity is considered.
    """
    taken: set[str] = set(held)
    reserved: set[str] = set()
    extra_holding: dict[str, float] = {}
    out: list[tuple[QueueEntry, Allocation]] = []
    # Requests (by value) that were blocked and so reserved every free device they could use.
    # ``taken`` and ``reserved`` only grow during a walk, so an equal request later finds none of
    # its candidates free: whatever its user's limits say, it starts nothing and reserves
    # nothing new. Skipping it gives the same result, and a walk over hundreds of waiting jobs
    # that ask for a few kinds of request costs a few device scans instead of one per entry.
    short: set[GpuRequest] = set()
    for entry in ordered:
        req = entry.request
        try:
            if req in short:
                continue
        except TypeError:  # an unhashable (invalid) value: validate below refuses it
            pass
        if req.kind == "none" or validate(inventory, req) is not None:
            continue
        blocked = taken | reserved
        if limits_for is not None:
            lim = limits_for(entry)
            if lim is None:
                continue
            limits, holding = lim
            result: Allocation | Denial = decide(
                inventory, dict.fromkeys(blocked), req, limits, holding + extra_holding.get(entry.user, 0.0)
            )
            if isinstance(result, Denial) and result.kind != "capacity":
                continue
        else:
            picked = pick_devices(inventory, blocked, req)
            result = (
                Allocation(tuple(d.uuid for d in picked), inventory.equivalents_of([d.uuid for d in picked]))
                if picked is not None
                else Denial("capacity", "not enough free devices")
            )
        if isinstance(result, Allocation):
            out.append((entry, result))
            taken.update(result.devices)
            extra_holding[entry.user] = extra_holding.get(entry.user, 0.0) + result.equivalents
        else:
            # Blocked: keep every free device it could use for it.
            reserved.update(d.uuid for d in candidates(inventory, req) if d.uuid not in taken)
            try:
                short.add(req)
            except TypeError:
                pass
    return out

