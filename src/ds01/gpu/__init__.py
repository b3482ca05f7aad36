"""GPU inventory: NVML on real hosts, a simulated inventory from config elsewhere.

Importing this package never imports ``pynvml`` (``ds01 --help`` must work without a driver).
"""

from __future__ import annotations

from ds01.errors import ConfigError
from ds01.gpu.inventory import Device, DeviceUtil, EmptySource, Inventory, InventorySource
from ds01.gpu.simulated import SimulatedSource
from ds01.models.config import GpuConfig

__all__ = [
    "Device",
    "DeviceUtil",
    "EmptySource",
    "Inventory",
    "InventorySource",
    "SimulatedSource",
    "make_source",
]


def make_source(gpu_cfg: GpuConfig) -> InventorySource:
    """The inventory source ``gpu.inventory`` asks for.

    ``auto``: NVML when libnvidia-ml loads, else the simulated inventory from ``gpu.simulated``.
    ``nvml``: NVML or ConfigError (fail closed: an admin who asked for real GPUs must not silently
    get simulated ones). ``simulated``: from config. ``none``: an empty inventory.
    """
    from ds01.gpu.nvml import NvmlSource, nvml_available

    mode = gpu_cfg.inventory
    if mode == "none":
        return EmptySource()
    if mode == "simulated":
        return SimulatedSource(gpu_cfg.simulated)
    if mode == "nvml":
        if not nvml_available():
            raise ConfigError(
                "gpu.inventory is 'nvml' but NVML cannot be loaded (no NVIDIA driver or nvidia-ml-py)",
                "install the driver and nvidia-ml-py, or set gpu.inventory: simulated / none",
            )
        return NvmlSource()
    return NvmlSource() if nvml_available() else SimulatedSource(gpu_cfg.simulated)
