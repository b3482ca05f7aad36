"""A simulated inventory from config, so every GPU policy path runs on hosts without GPUs.

UUIDs are deterministic (``GPU-sim-0000`` for GPU 0, ``MIG-sim-0003-01`` for MIG device 1 on
GPU 3), so allocations recorded in state and in container labels survive a daemon restart.
"""

from __future__ import annotations

from ds01.errors import ConfigError
from ds01.gpu.inventory import MIG_SLICES, Device, DeviceUtil, Inventory, InventorySource, parse_profile
from ds01.models.config import SimulatedInventory


def sim_gpu_uuid(index: int) -> str:
    return f"GPU-sim-{index:04d}"


def sim_mig_uuid(parent_index: int, mig_index: int) -> str:
    return f"MIG-sim-{parent_index:04d}-{mig_index:02d}"


def build_inventory(cfg: SimulatedInventory) -> Inventory:
    """The inventory a ``SimulatedInventory`` config describes. Raises ConfigError when a card's
    MIG profiles need more than its 7 compute slices."""
    devices: list[Device] = []
    for i, g in enumerate(cfg.gpus):
        gpu = Device(
            uuid=sim_gpu_uuid(i),
            index=i,
            name=g.name,
            memory_bytes=g.memory,
            kind="gpu",
            mig_enabled=g.mig is not None,
        )
        devices.append(gpu)
        if g.mig is None:
            continue
        used = 0
        for j, profile in enumerate(g.mig):
            try:
                slices, gb = parse_profile(profile)
            except ValueError as e:
                raise ConfigError(f"gpu.simulated.gpus[{i}].mig[{j}]: {e}") from None
            used += slices
            devices.append(
                Device(
                    uuid=sim_mig_uuid(i, j),
                    index=j,
                    name=f"{g.name} MIG {profile.lower()}",
                    # The profile name's GB, but never more than the card has.
                    memory_bytes=min(gb * 1024**3, g.memory),
                    kind="mig",
                    parent_uuid=gpu.uuid,
                    parent_index=i,
                    profile=profile.lower(),
                    slices=slices,
                )
            )
        if used > MIG_SLICES:
            raise ConfigError(
                f"gpu.simulated.gpus[{i}].mig: profiles {', '.join(g.mig)} need {used} compute slices; "
                f"a card has {MIG_SLICES}"
            )
    return Inventory(driver_version=cfg.driver_version, cuda_version=cfg.cuda_version, devices=tuple(devices))


class SimulatedSource(InventorySource):
    """Inventory from config. Utilization and processes are whatever tests set (idle by default)."""

    kind = "simulated"

    def __init__(self, cfg: SimulatedInventory | None = None):
        self._inventory = build_inventory(cfg if cfg is not None else SimulatedInventory())
        self._util: dict[str, DeviceUtil] = {
            d.uuid: DeviceUtil(gpu_percent=0.0, memory_used_bytes=0) for d in self._inventory.devices
        }
        self._procs: dict[str, list[int]] = {d.uuid: [] for d in self._inventory.devices}

    def read(self) -> Inventory:
        return self._inventory

    def utilization(self) -> dict[str, DeviceUtil]:
        return dict(self._util)

    def processes(self) -> dict[str, list[int]]:
        return {u: list(p) for u, p in self._procs.items()}

    def set_utilization(self, uuid: str, gpu_percent: float | None, memory_used_bytes: int | None = 0) -> None:
        """Test hook: what ``utilization()`` reports for one device."""
        self._check(uuid)
        self._util[uuid] = DeviceUtil(gpu_percent=gpu_percent, memory_used_bytes=memory_used_bytes)

    def set_processes(self, uuid: str, pids: list[int]) -> None:
        """Test hook: what ``processes()`` reports for one device."""
        self._check(uuid)
        self._procs[uuid] = list(pids)

    def _check(self, uuid: str) -> None:
        if uuid not in self._inventory.by_uuid:
            raise KeyError(f"no simulated device {uuid}")
