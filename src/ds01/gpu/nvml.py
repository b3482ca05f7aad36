"""Inventory from NVML (``pynvml`` from the ``nvidia-ml-py`` package).

``pynvml`` is imported inside methods, never at module import: ``ds01 --help`` and every host
without the NVIDIA driver must be able to import this package. nvidia-smi is never run.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from ds01.errors import RuntimeFailure
from ds01.gpu.inventory import MIG_SLICES, Device, DeviceUtil, Inventory, InventorySource

_MIG_NAME = re.compile(r"MIG\s+(\d+g\.\d+gb(?:\+me)?)", re.I)


def _text(value: Any) -> str:
    # pynvml returns bytes or str depending on version and call.
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version_string(v: int) -> str:
    """NVML's integer CUDA driver version (13000, 12040) -> ``"13.0"``, ``"12.4"``."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def nvml_available() -> bool:
    """True when pynvml imports and libnvidia-ml initialises (a driver is loaded)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any failure means "no NVML here"
        return False
    try:
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001
        pass
    return True


class NvmlSource(InventorySource):
    """Reads GPUs and MIG instances through NVML.

    NVML is initialised on first use and kept open until ``close()``. Every call re-enumerates
    handles, so a MIG reconfiguration shows up in the next ``read()``. NVML errors become
    ``RuntimeFailure``; a single feature the card does not support (MIG mode on a consumer GPU,
    utilization of a MIG instance) is not an error.
    """

    kind = "nvml"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None

    # -- plumbing ---------------------------------------------------------------------------
    def _lib(self) -> Any:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as e:
                raise RuntimeFailure(
                    "the nvidia-ml-py package (pynvml) is not installed", "install nvidia-ml-py"
                ) from e
            try:
                pynvml.nvmlInit()
            except Exception as e:  # noqa: BLE001 - pynvml raises NVMLError subclasses
                raise RuntimeFailure(
                    f"cannot initialise NVML: {e}",
                    "is the NVIDIA driver loaded? set gpu.inventory: simulated or none on hosts without GPUs",
                ) from e
            self._nvml = pynvml
        return self._nvml

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: BLE001 - shutting down anyway
                    pass
                self._nvml = None

    @staticmethod
    def _unsupported(nv: Any, e: Exception) -> bool:
        value = getattr(e, "value", None)
        return value in (
            getattr(nv, "NVML_ERROR_NOT_SUPPORTED", 3),
            getattr(nv, "NVML_ERROR_NOT_FOUND", 6),
            getattr(nv, "NVML_ERROR_INVALID_ARGUMENT", 2),
        )

    def _mig_enabled(self, nv: Any, handle: Any) -> bool:
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
        except nv.NVMLError as e:
            if self._unsupported(nv, e):
                return False
            raise
        return current == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)

    def _mig_handles(self, nv: Any, handle: Any) -> list[tuple[int, Any]]:
        """(MIG index, handle) for every MIG device present on a MIG-enabled GPU."""
        out = []
        count = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
        for j in range(count):
            try:
                out.append((j, nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)))
            except nv.NVMLError as e:
                # Slots without an instance answer NOT_FOUND; skip them.
                if self._unsupported(nv, e):
                    continue
                raise
        return out

    def _walk(self, nv: Any) -> list[tuple[Device, Any]]:
        """Every device with its handle: each GPU, then its MIG instances."""
        out: list[tuple[Device, Any]] = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mig = self._mig_enabled(nv, h)
            name = _text(nv.nvmlDeviceGetName(h))
            gpu = Device(
                uuid=_text(nv.nvmlDeviceGetUUID(h)),
                index=i,
                name=name,
                memory_bytes=int(nv.nvmlDeviceGetMemoryInfo(h).total),
                kind="gpu",
                mig_enabled=mig,
            )
            out.append((gpu, h))
            if not mig:
                continue
            for j, mh in self._mig_handles(nv, h):
                out.append((self._mig_device(nv, gpu, j, mh), mh))
        return out

    def _mig_device(self, nv: Any, gpu: Device, j: int, mh: Any) -> Device:
        attrs = nv.nvmlDeviceGetAttributes(mh)
        slices = int(attrs.gpuInstanceSliceCount)
        mem_mb = int(attrs.memorySizeMB)
        try:
            memory = int(nv.nvmlDeviceGetMemoryInfo(mh).total)
        except nv.NVMLError:
            memory = mem_mb * 1024**2
        mig_name = _text(nv.nvmlDeviceGetName(mh))
        m = _MIG_NAME.search(mig_name)
        # NVML names MIG devices "<card> MIG 3g.40gb". If a driver does not, ask the GPU-instance
        # profile table for the name; last resort: a name from slices and memory (approximate:
        # NVIDIA's names use marketing GB).
        profile = m.group(1).lower() if m else self._gi_profile_name(nv, gpu.index, mh)
        if profile is None:
            profile = f"{slices}g.{max(1, round(mem_mb / 1024))}gb"
        return Device(
            uuid=_text(nv.nvmlDeviceGetUUID(mh)),
            index=j,
            name=mig_name if m else f"{gpu.name} MIG {profile}",
            memory_bytes=memory,
            kind="mig",
            parent_uuid=gpu.uuid,
            parent_index=gpu.index,
            profile=profile,
            slices=max(1, min(slices, MIG_SLICES)),
        )

    def _gi_profile_name(self, nv: Any, parent_index: int, mh: Any) -> str | None:
        try:
            parent = nv.nvmlDeviceGetHandleByIndex(parent_index)
            gi = nv.nvmlDeviceGetGpuInstanceById(parent, nv.nvmlDeviceGetGpuInstanceId(mh))
            profile_id = int(nv.nvmlGpuInstanceGetInfo(gi).profileId)
            for p in self._profile_table(nv, parent):
                if p["id"] == profile_id and p.get("name"):
                    m = _MIG_NAME.search(str(p["name"]))
                    return m.group(1).lower() if m else None
        except Exception:  # noqa: BLE001 - only a naming fallback
            return None
        return None

    @staticmethod
    def _profile_table(nv: Any, h: Any) -> list[dict[str, Any]]:
        out = []
        for p in range(getattr(nv, "NVML_GPU_INSTANCE_PROFILE_COUNT", 12)):
            try:
                info = nv.nvmlDeviceGetGpuInstanceProfileInfo(h, p)
            except nv.NVMLError:
                continue  # this card does not offer profile p
            row: dict[str, Any] = {
                "profile": p,
                "id": int(info.id),
                "slices": int(info.sliceCount),
                "memory_bytes": int(info.memorySizeMB) * 1024**2,
                "instances": int(info.instanceCount),
            }
            name = getattr(info, "name", None)
            if name:
                row["name"] = _text(name)
            out.append(row)
        return out

    def _call(self, fn: Any) -> Any:
        with self._lock:
            nv = self._lib()
            try:
                return fn(nv)
            except RuntimeFailure:
                raise
            except nv.NVMLError as e:
                raise RuntimeFailure(f"NVML: {e}", "check 'dmesg' and the NVIDIA driver") from e

    # -- InventorySource -------------------------------------------------------------------
    def read(self) -> Inventory:
        def go(nv: Any) -> Inventory:
            driver = _text(nv.nvmlSystemGetDriverVersion())
            try:
                cuda: str | None = cuda_version_string(int(nv.nvmlSystemGetCudaDriverVersion()))
            except nv.NVMLError:
                cuda = None
            return Inventory(driver_version=driver, cuda_version=cuda, devices=tuple(d for d, _ in self._walk(nv)))

        return self._call(go)

    def utilization(self) -> dict[str, DeviceUtil]:
        def go(nv: Any) -> dict[str, DeviceUtil]:
            out: dict[str, DeviceUtil] = {}
            for d, h in self._walk(nv):
                gpu: float | None
                try:
                    gpu = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                except nv.NVMLError as e:
                    if not self._unsupported(nv, e):
                        raise
                    gpu = None  # MIG instances have no utilization counter
                try:
                    used: int | None = int(nv.nvmlDeviceGetMemoryInfo(h).used)
                except nv.NVMLError as e:
                    if not self._unsupported(nv, e):
                        raise
                    used = None
                out[d.uuid] = DeviceUtil(gpu_percent=gpu, memory_used_bytes=used)
            return out

        return self._call(go)

    def temperatures(self) -> dict[str, float]:
        """GPU core temperature (°C) per whole GPU; MIG instances share their parent's sensor."""
        def go(nv: Any) -> dict[str, float]:
            out: dict[str, float] = {}
            for d, h in self._walk(nv):
                if d.kind != "gpu":
                    continue
                try:
                    out[d.uuid] = float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
                except nv.NVMLError as e:
                    if not self._unsupported(nv, e):
                        raise
            return out

        return self._call(go)

    def processes(self) -> dict[str, list[int]]:
        def go(nv: Any) -> dict[str, list[int]]:
            out: dict[str, list[int]] = {}
            for d, h in self._walk(nv):
                try:
                    procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
                except nv.NVMLError as e:
                    if not self._unsupported(nv, e):
                        raise
                    procs = []
                out[d.uuid] = sorted({int(p.pid) for p in procs})
            return out

        return self._call(go)

    def gi_profiles(self, index: int) -> list[dict[str, Any]]:
        """Diagnostics: the MIG GPU-instance profiles card ``index`` offers, whether or not MIG is
        on: NVML profile index, profile id, slices, memory bytes, max instances (and the name,
        e.g. ``"MIG 3g.71gb"``, where the driver reports it)."""
        return self._call(lambda nv: self._profile_table(nv, nv.nvmlDeviceGetHandleByIndex(index)))
