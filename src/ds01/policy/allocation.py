"""Pure GPU allocation: which specific devices a request gets, or a precise reason why not.

``decide`` never has side effects; the daemon calls it inside the same state transaction that
records the result, which is what makes allocation atomic (no device held twice, no limit breached
under any concurrency).

Checks run in a fixed order, and the first failure is the answer:

1. ``invalid``    the request cannot make sense on this host (conflicting flags, ``--gpus 0``,
                  more GPUs than the host has, a MIG profile the host does not have). Never
                  queueable: waiting would not help.
2. ``over_limit`` the caller's limits refuse it (allow_full_gpu / allow_mig, per-container cap,
                  total GPU-equivalents held). Checked before capacity, so a user over quota is
                  told so rather than invited to queue.
3. ``capacity``   the quota allows it but no suitable device is free now (``--queue`` can wait).

Device choice (deterministic for a given inventory and ``held``):

- ``--gpus N``: the N lowest-index free whole GPUs. A whole (MIG-off) GPU is either entirely free
  or entirely held, so there is nothing to fragment among them; MIG-split cards are never handed
  out whole.
- ``--gpu-profile P``: a free instance of exactly P, on the card whose instances are already the
  most used (packing), then lowest card and MIG index. Packing keeps other split cards entirely
  free, which is what an admin needs to re-partition one, and leaves the most room per card.
- ``--mig N``: the N smallest free instances (slices, then memory), same packing tie-break.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Literal, Mapping

from ds01.errors import CapacityExhausted, DS01Error, InvalidInput, PolicyDenied
from ds01.models.gpu import MIG_SLICES, Device, GpuRequest, Inventory, parse_profile
from ds01.policy.limits import EffectiveLimits

EPS = 1e-9
DenialKind = Literal["invalid", "over_limit", "capacity"]


def fmt_eq(x: float) -> str:
    """GPU-equivalents for messages: ``1.0``, ``2.0``, ``0.43``, ``0.5``."""
    s = f"{round(x, 2):.2f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


@dataclass(frozen=True)
class Allocation:
    """Specific device uuids (in pick order) and their GPU-equivalents."""

    devices: tuple[str, ...]
    equivalents: float

    ok: bool = field(default=True, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class Denial:
    kind: DenialKind
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    ok: bool = field(default=False, init=False, repr=False, compare=False)

    def to_error(self) -> DS01Error:
        """The error this denial travels as: InvalidInput, PolicyDenied or CapacityExhausted."""
        cls = {"invalid": InvalidInput, "over_limit": PolicyDenied, "capacity": CapacityExhausted}[self.kind]
        return cls(self.message, self.hint, dict(self.details) or None)


# -- validation ---------------------------------------------------------------------------------


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(inventory: Inventory, request: GpuRequest) -> Denial | None:
    """The ``invalid`` denial for a request that cannot make sense on this host, else None."""
    k = request.kind
    if k == "conflict":
        return Denial(
            "invalid",
            "use only one of --gpus, --gpu-profile and --mig",
            "--gpus N for whole GPUs, --gpu-profile P for one MIG instance, --mig N for N MIG instances",
        )
    if k == "none":
        return None
    if not inventory.gpus:
        return Denial("invalid", "this host has no GPUs", "leave out --gpus/--gpu-profile/--mig for a CPU-only container")
    if k == "gpus":
        n = request.gpus
        if not _is_count(n):
            return Denial("invalid", f"--gpus must be a whole number, not {n!r}")
        if n < 1:
            return Denial(
                "invalid", f"--gpus must be at least 1 (got {n})", "leave out --gpus for a CPU-only container"
            )
        total = len(inventory.whole_gpus)
        if total == 0:
            return Denial(
                "invalid",
                "every GPU on this host is split into MIG instances, so whole GPUs cannot be allocated",
                _profiles_hint(inventory),
            )
        if n > total:
            return Denial(
                "invalid",
                f"--gpus {n}: this host has only {total} whole GPU{'s' if total != 1 else ''}",
                f"ask for at most --gpus {total}",
            )
        return None
    if not inventory.mig_instances:
        return Denial(
            "invalid",
            "this host has no MIG instances",
            f"ask for whole GPUs with --gpus N (this host has {len(inventory.whole_gpus)})",
        )
    if k == "profile":
        p = request.profile
        try:
            if not isinstance(p, str):
                raise ValueError
            parse_profile(p)
        except ValueError:
            return Denial("invalid", f"{p!r} is not a MIG profile name (like 3g.20gb)", _profiles_hint(inventory))
        if p.strip().lower() not in inventory.profiles:
            return Denial(
                "invalid",
                f"MIG profile {p} does not exist on this host; available: {', '.join(inventory.profiles)}",
                _profiles_hint(inventory),
            )
        return None
    n = request.mig
    if not _is_count(n):
        return Denial("invalid", f"--mig must be a whole number, not {n!r}")
    if n < 1:
        return Denial("invalid", f"--mig must be at least 1 (got {n})", "leave out --mig for a CPU-only container")
    total = len(inventory.mig_instances)
    if n > total:
        return Denial(
            "invalid",
            f"--mig {n}: this host has only {total} MIG instance{'s' if total != 1 else ''}",
            f"ask for at most --mig {total}",
        )
    return None


def _profiles_hint(inventory: Inventory) -> str | None:
    if inventory.profiles:
        return f"ask for one of the MIG profiles here with --gpu-profile ({', '.join(inventory.profiles)}) or --mig N"
    return None


# -- device choice (capacity only) --------------------------------------------------------------


def _parent_load(inventory: Inventory, unavailable: Collection[str]) -> dict[str | None, int]:
    load: dict[str | None, int] = {}
    for d in inventory.mig_instances:
        if d.uuid in unavailable:
            load[d.parent_uuid] = load.get(d.parent_uuid, 0) + d.slices
    return load


def candidates(inventory: Inventory, request: GpuRequest) -> tuple[Device, ...]:
    """Every device of the kind this request could use, free or not (what a queued request
    reserves). Assumes a valid request."""
    k = request.kind
    if k == "gpus":
        return inventory.whole_gpus
    if k == "profile":
        p = str(request.profile).strip().lower()
        return tuple(d for d in inventory.mig_instances if d.profile == p)
    if k == "mig":
        return inventory.mig_instances
    return ()


def pick_devices(inventory: Inventory, unavailable: Collection[str], request: GpuRequest) -> tuple[Device, ...] | None:
    """The devices a valid request gets when ``unavailable`` uuids are taken, or None when not
    enough are free. Capacity only: no validation, no limits."""
    k = request.kind
    if k == "none":
        return ()
    if k == "gpus":
        n = request.gpus
        picked = []
        for d in inventory.whole_gpus:
            if d.uuid not in unavailable:
                picked.append(d)
                if len(picked) == n:
                    return tuple(picked)
        return None
    free = [d for d in candidates(inventory, request) if d.uuid not in unavailable]
    n = 1 if k == "profile" else request.mig
    if len(free) < n:
        return None
    load = _parent_load(inventory, unavailable)
    if k == "profile":
        free.sort(key=lambda d: (-load.get(d.parent_uuid, 0), d.parent_index, d.index))
    else:
        free.sort(key=lambda d: (d.slices, d.memory_bytes, -load.get(d.parent_uuid, 0), d.parent_index, d.index))
    return tuple(free[:n])


def _equivalents(devices: tuple[Device, ...] | list[Device]) -> float:
    # Sum slices then divide once, so 7 x 1g is exactly 1.0 (no float drift across a quota edge).
    whole = sum(1 for d in devices if d.kind == "gpu")
    return whole + sum(d.slices for d in devices if d.kind == "mig") / MIG_SLICES


# -- the decision -------------------------------------------------------------------------------


def decide(
    inventory: Inventory,
    held: Mapping[str, Any],
    request: GpuRequest,
    limits: EffectiveLimits,
    user_holding_equivalents: float,
) -> Allocation | Denial:
    """Allocate specific devices for ``request`` or say precisely why not.

    ``held`` maps every device uuid currently held (by anyone) to its holder; ``limits`` are the
    caller's effective limits and ``user_holding_equivalents`` what the caller already holds.
    """
    bad = validate(inventory, request)
    if bad is not None:
        return bad
    k = request.kind
    if k == "none":
        return Allocation((), 0.0)

    # -- policy -----------------------------------------------------------------------------
    at_least = ""
    if k == "gpus":
        if not limits.allow_full_gpu:
            return Denial(
                "over_limit",
                "your limits do not allow whole GPUs (allow_full_gpu: false)",
                _profiles_hint(inventory) if limits.allow_mig else None,
            )
        ask = float(request.gpus)
    else:
        if not limits.allow_mig:
            hint = "ask for whole GPUs with --gpus N" if limits.allow_full_gpu and inventory.whole_gpus else None
            return Denial("over_limit", "your limits do not allow MIG instances (allow_mig: false)", hint)
        if k == "profile":
            ask = parse_profile(request.profile)[0] / MIG_SLICES
        else:
            # The least any N instances here could cost; if even that is over the limit, no
            # amount of waiting helps, so it is a limit denial, not a capacity one.
            smallest = sorted(d.slices for d in inventory.mig_instances)[: request.mig]
            ask = sum(smallest) / MIG_SLICES
            if len(set(d.slices for d in inventory.mig_instances)) > 1:
                at_least = "at least "
    if ask > limits.max_gpus_per_container + EPS:
        return Denial(
            "over_limit",
            f"this asks for {at_least}{fmt_eq(ask)} GPU-equivalents in one container; "
            f"your limit is {fmt_eq(limits.max_gpus_per_container)} per container",
            "ask for less (a MIG instance counts slices/7 of a GPU)",
            {"ask": ask, "max_gpus_per_container": limits.max_gpus_per_container},
        )
    holding = max(0.0, float(user_holding_equivalents))
    if holding + ask > limits.max_gpus + EPS:
        return Denial(
            "over_limit",
            f"you hold {fmt_eq(holding)} of {fmt_eq(limits.max_gpus)} GPU-equivalents; "
            f"this asks for {at_least}{fmt_eq(ask)}",
            "remove a container that holds GPUs (or wait for a stopped one to release them), or ask for less",
            {"holding": holding, "max_gpus": limits.max_gpus, "ask": ask},
        )

    # -- capacity ---------------------------------------------------------------------------
    picked = pick_devices(inventory, held, request)
    if picked is None:
        pool = candidates(inventory, request)
        free = sum(1 for d in pool if d.uuid not in held)
        what = {
            "gpus": "whole GPUs",
            "profile": f"{str(request.profile).strip().lower()} MIG instances",
            "mig": "MIG instances",
        }[k]
        return Denial(
            "capacity",
            f"not enough free {what} for {request.describe()}: {free} of {len(pool)} free",
            "add --queue to wait for one; 'ds01 gpus' shows who holds what",
            {"free": free, "total": len(pool)},
        )
    eq = _equivalents(picked)
    if holding + eq > limits.max_gpus + EPS or eq > limits.max_gpus_per_container + EPS:
        # Only --mig N gets here: the smallest free instances are larger than the smallest that
        # exist, and those larger ones are over the limit. Smaller ones may free up: capacity.
        return Denial(
            "capacity",
            f"the smallest free MIG instances for {request.describe()} total {fmt_eq(eq)} GPU-equivalents; "
            f"you hold {fmt_eq(holding)} of {fmt_eq(limits.max_gpus)} "
            f"(at most {fmt_eq(limits.max_gpus_per_container)} per container)",
            "add --queue to wait for smaller instances, or ask for a specific --gpu-profile",
            {"ask": eq, "holding": holding},
        )
    return Allocation(tuple(d.uuid for d in picked), eq)
