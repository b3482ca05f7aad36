"""GPU inventory: the narrow interface that reads what a host offers. The models themselves
(``Device``, ``Inventory`` …) are pure data in ``ds01.models.gpu``, re-exported here.

Nothing here does I/O; ``InventorySource`` implementations (NVML, simulated) do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ds01.models.gpu import MIG_SLICES, Device, DeviceKind, DeviceUtil, Inventory, parse_profile  # noqa: F401


class InventorySource(ABC):
    """Where the inventory comes from (NVML, a simulated config, nothing).

    Contract:
    - ``read()`` returns a consistent snapshot. Device uuids are stable across calls while the
      hardware and MIG layout do not change; that is what allocations are keyed on.
    - ``utilization()`` and ``processes()`` are keyed by device uuid, and only cover devices in
      the current inventory; a device the driver gives no figure for may be absent or ``None``.
    - Failures to talk to the driver raise ``ds01.errors.RuntimeFailure`` (fail closed: the daemon
      never allocates against a guessed inventory).
    - Implementations are safe to call from one thread at a time; the daemon serialises calls.
    """

    kind: str = "abstract"

    @abstractmethod
    def read(self) -> Inventory: ...

    @abstractmethod
    def utilization(self) -> dict[str, DeviceUtil]: ...

    def temperatures(self) -> dict[str, float]:
        """GPU core temperature (°C) by whole-GPU uuid; {} where the source has no sensors."""
        return {}

    @abstractmethod
    def processes(self) -> dict[str, list[int]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release driver resources (NVML shutdown). Safe to call twice."""


class EmptySource(InventorySource):
    """``gpu.inventory: none``: a host with no GPUs; every GPU request is refused as invalid."""

    kind = "none"

    def read(self) -> Inventory:
        return Inventory()

    def utilization(self) -> dict[str, DeviceUtil]:
        return {}

    def processes(self) -> dict[str, list[int]]:
        return {}
