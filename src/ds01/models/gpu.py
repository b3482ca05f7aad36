"""GPU models: what a host offers (devices, MIG instances, an inventory snapshot) and what a
request asks for. Pure data; the ``ds01.gpu`` sources (NVML, simulated) read the inventory, and
``policy.allocation`` decides requests against it.

A host has whole GPUs. A GPU with MIG mode on is split into MIG instances; then the instances are
what containers get, and the parent card itself is *not* allocatable as a whole (handing it out
would give one container every instance on it). Accounting is in GPU-equivalents: a whole GPU is
1.0, a MIG instance is ``slices / 7`` of its parent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

MIG_SLICES = 7
"""Compute slices of a full MIG-capable GPU; a MIG instance counts ``slices / MIG_SLICES``."""

DeviceKind = Literal["gpu", "mig"]

_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb(\+me)?\Z")


def parse_profile(profile: str) -> tuple[int, int]:
    """``"3g.20gb"`` -> ``(3, 20)``: compute slices and the memory (GB) in the profile's name.

    Raises ValueError for anything that is not a MIG profile name.
    """
    m = _PROFILE.match(profile.strip().lower())
    if not m:
        raise ValueError(f"{profile!r} is not a MIG profile; use e.g. '1g.10gb' or '3g.40gb'")
    slices, gb = int(m.group(1)), int(m.group(2))
    if not 1 <= slices <= MIG_SLICES:
        raise ValueError(f"{profile!r}: a MIG instance has 1 to {MIG_SLICES} compute slices")
    return slices, gb


@dataclass(frozen=True)
class Device:
    """One allocatable-or-not device.

    ``index`` is the NVML index for a GPU, and the MIG device index within its parent for a MIG
    instance (``parent_index`` then names the card). ``slices`` is 7 for a whole GPU.
    ``mig_enabled`` is only meaningful for GPUs: True means the card is split and only its MIG
    instances are allocatable.
    """

    uuid: str
    index: int
    name: str
    memory_bytes: int
    kind: DeviceKind = "gpu"
    parent_uuid: str | None = None
    parent_index: int | None = None
    profile: str | None = None
    slices: int = MIG_SLICES
    mig_enabled: bool = False
    node: str | None = None  # cluster mode: the server it is in (None: this one)

    @property
    def equivalents(self) -> float:
        return 1.0 if self.kind == "gpu" else self.slices / MIG_SLICES

    @property
    def label(self) -> str:
        """Short human id: ``"2"`` for GPU 2, ``"3:1"`` for MIG device 1 on GPU 3; in cluster
        mode prefixed by the node (``"ds01n1/2"``)."""
        own = str(self.index) if self.kind == "gpu" else f"{self.parent_index}:{self.index}"
        return f"{self.node}/{own}" if self.node else own

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "index": self.index,
            "label": self.label,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "kind": self.kind,
            "parent_uuid": self.parent_uuid,
            "parent_index": self.parent_index,
            "profile": self.profile,
            "slices": self.slices,
            "mig_enabled": self.mig_enabled,
            "equivalents": self.equivalents,
            "node": self.node,
        }


@dataclass(frozen=True)
class Inventory:
    """A snapshot of the host's devices: GPUs first (by index), each followed by its MIG instances.

    Derived views are computed once per snapshot (the allocator reads them on every decision).
    """

    driver_version: str | None = None
    cuda_version: str | None = None
    devices: tuple[Device, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        # Accept any iterable but store a tuple, so the snapshot is immutable and hashable-ish.
        object.__setattr__(self, "devices", tuple(self.devices))
        seen: set[str] = set()
        for d in self.devices:
            if d.uuid in seen:
                raise ValueError(f"duplicate device uuid {d.uuid}")
            seen.add(d.uuid)

    @cached_property
    def by_uuid(self) -> dict[str, Device]:
        return {d.uuid: d for d in self.devices}

    @cached_property
    def gpus(self) -> tuple[Device, ...]:
        """Every physical GPU, MIG-split or not, by index."""
        return tuple(sorted((d for d in self.devices if d.kind == "gpu"), key=lambda d: (d.node or "", d.index)))

    @cached_property
    def whole_gpus(self) -> tuple[Device, ...]:
        """GPUs with MIG off: the ones a ``--gpus N`` request can get, by index."""
        return tuple(d for d in self.gpus if not d.mig_enabled)

    @cached_property
    def mig_instances(self) -> tuple[Device, ...]:
        """MIG instances by (parent index, MIG index)."""
        return tuple(
            sorted(
                (d for d in self.devices if d.kind == "mig"),
                key=lambda d: (d.parent_index if d.parent_index is not None else -1, d.index),
            )
        )

    @cached_property
    def allocatable(self) -> tuple[Device, ...]:
        """What containers can be given: whole GPUs with MIG off, plus MIG instances."""
        return self.whole_gpus + self.mig_instances

    @cached_property
    def profiles(self) -> tuple[str, ...]:
        """MIG profile names present on this host, smallest first."""
        names = {d.profile for d in self.mig_instances if d.profile}
        return tuple(sorted(names, key=lambda p: (_profile_key(p), p)))

    @cached_property
    def total_equivalents(self) -> float:
        return float(len(self.whole_gpus)) + sum(d.slices for d in self.mig_instances) / MIG_SLICES

    def device(self, uuid: str) -> Device | None:
        return self.by_uuid.get(uuid)

    def children(self, parent_uuid: str) -> tuple[Device, ...]:
        return tuple(d for d in self.mig_instances if d.parent_uuid == parent_uuid)

    def equivalents_of(self, uuids: list[str] | tuple[str, ...]) -> float:
        """GPU-equivalents of a set of device uuids (unknown uuids count 0: they vanished)."""
        total_slices = 0
        whole = 0
        for u in uuids:
            d = self.by_uuid.get(u)
            if d is None:
                continue
            if d.kind == "gpu":
                whole += 1
            else:
                total_slices += d.slices
        return whole + total_slices / MIG_SLICES

    def to_dict(self) -> dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "devices": [d.to_dict() for d in self.devices],
        }


def _profile_key(profile: str) -> tuple[int, int]:
    try:
        return parse_profile(profile)
    except ValueError:
        return (99, 0)


@dataclass(frozen=True)
class DeviceUtil:
    """Live use of one device. ``None`` means the driver does not report it (NVML gives no
    utilization for MIG instances)."""

    gpu_percent: float | None = None
    memory_used_bytes: int | None = None


RequestKind = Literal["none", "gpus", "profile", "mig", "conflict"]


@dataclass(frozen=True)
class GpuRequest:
    """At most one of: ``gpus`` (N whole GPUs), ``profile`` (one MIG instance of that profile),
    ``mig`` (N MIG instances of any profile, smallest that fit). None of them: no GPU.

    Values are not validated at construction, so a bad request still reaches ``decide`` and gets
    its precise ``invalid`` denial.
    """

    gpus: Any = None
    profile: Any = None
    mig: Any = None

    @property
    def kind(self) -> RequestKind:
        given = [k for k in ("gpus", "profile", "mig") if getattr(self, k) is not None]
        if not given:
            return "none"
        if len(given) > 1:
            return "conflict"
        return given[0]  # type: ignore[return-value]

    def describe(self) -> str:
        k = self.kind
        if k == "gpus":
            return f"{self.gpus} whole GPU{'s' if self.gpus != 1 else ''}"
        if k == "profile":
            return f"a {self.profile} MIG instance"
        if k == "mig":
            return f"{self.mig} MIG instance{'s' if self.mig != 1 else ''}"
        if k == "none":
            return "no GPU"
        return "conflicting GPU options"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("gpus", self.gpus), ("profile", self.profile), ("mig", self.mig)) if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "GpuRequest":
        d = d or {}
        return cls(gpus=d.get("gpus"), profile=d.get("profile"), mig=d.get("mig"))
