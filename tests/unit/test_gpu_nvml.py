"""NvmlSource against a fake ``pynvml`` built from the real H200 capture (nvml.json).

The fake answers exactly what the capture recorded (one H200, MIG disabled, its GPU-instance
profile table, idle and busy utilization/processes). For MIG paths the same card is "split" using
its real profile table, since no MIG-enabled capture exists.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from ds01.errors import ConfigError, RuntimeFailure
from ds01.gpu import SimulatedSource, make_source
from ds01.gpu.inventory import DeviceUtil
from ds01.gpu.nvml import NvmlSource, cuda_version_string, nvml_available
from ds01.models.config import GpuConfig
from ds01.policy.allocation import Allocation, GpuRequest, decide
from ds01.policy.limits import effective_limits
from ds01.models.config import Config

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h200-mig-disabled"
CAPTURE = json.loads((FIX / "nvml.json").read_text())
H200_UUID = "GPU-a591441c-4e7d-555b-bff0-365d3b14540b"

# GPU-instance profile id -> name, from `nvidia-smi mig -lgip` in gpu-facts.txt (same card).
GI_NAMES = {19: "1g.18gb", 20: "1g.18gb+me", 15: "1g.35gb", 14: "2g.35gb", 9: "3g.71gb", 5: "4g.71gb", 0: "7g.141gb"}


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 6: "Not Found", 12: "NVML Shared Library Not Found"}.get(self.value, "Unknown")


def fake_pynvml(
    capture: dict[str, Any],
    *,
    busy_sample: int | None = None,
    mig_profiles: list[int] | None = None,
    mig_names: bool = True,
    init_error: int | None = None,
) -> types.ModuleType:
    """A module with the pynvml calls NvmlSource makes, answering from ``capture``.

    ``mig_profiles``: NVML GPU-instance profile *indexes* to split device 0 into (MIG on).
    ``mig_names=False``: MIG device names without the profile (tests the profile-table fallback).
    """
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_ERROR_INVALID_ARGUMENT = 2
    nv.NVML_ERROR_NOT_SUPPORTED = 3
    nv.NVML_ERROR_NOT_FOUND = 6
    nv.NVML_DEVICE_MIG_ENABLE = 1
    nv.NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
    state = {"init": 0, "shutdown": 0}
    nv.state = state
    devs = capture["devices"]
    sample = capture["busy_samples"][busy_sample] if busy_sample is not None else None

    class H:  # a device handle
        def __init__(self, dev: dict[str, Any], mig: dict[str, Any] | None = None):
            self.dev, self.mig = dev, mig

    profiles = {p["profile"]: p for p in devs[0]["gi_profiles"]}
    migs: list[dict[str, Any]] = []
    if mig_profiles is not None:
        for j, pidx in enumerate(mig_profiles):
            p = profiles[pidx]
            migs.append(
                {
                    "uuid": f"MIG-fake-{j:04d}-{p['id']:02d}",
                    "slices": p["slices"],
                    "mem_mb": p["mem_mb"],
                    "gi_id": 10 + j,
                    "profile_id": p["id"],
                    "name": GI_NAMES[p["id"]],
                }
            )

    def init() -> None:
        if init_error is not None:
            raise NVMLError(init_error)
        state["init"] += 1

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)
    nv.nvmlSystemGetDriverVersion = lambda: capture["driver"]
    nv.nvmlSystemGetCudaDriverVersion = lambda: capture["cuda_driver"]
    nv.nvmlDeviceGetCount = lambda: len(devs)
    nv.nvmlDeviceGetHandleByIndex = lambda i: H(devs[i])

    def name(h: H) -> Any:
        if h.mig is None:
            return h.dev["name"]
        return f"{h.dev['name']} MIG {h.mig['name']}" if mig_names else h.dev["name"]

    nv.nvmlDeviceGetName = name
    # Real pynvml may hand back bytes; the adapter must decode.
    nv.nvmlDeviceGetUUID = lambda h: (h.mig["uuid"] if h.mig else h.dev["uuid"]).encode()

    def meminfo(h: H) -> Any:
        total = h.mig["mem_mb"] * 1024**2 if h.mig else h.dev["memory_total"]
        used = 0
        if h.mig is None and sample is not None:
            used = sum(p["used"] for p in sample["procs"])
        return types.SimpleNamespace(total=total, used=used, free=total - used)

    nv.nvmlDeviceGetMemoryInfo = meminfo

    def mig_mode(h: H) -> list[int]:
        if h.mig is not None:
            raise NVMLError(3)
        return [1, 1] if mig_profiles is not None else list(h.dev["mig_mode"])

    nv.nvmlDeviceGetMigMode = mig_mode
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7 if mig_profiles is not None else h.dev["max_mig"]

    def mig_handle(h: H, j: int) -> H:
        if j >= len(migs):
            raise NVMLError(6)
        return H(h.dev, migs[j])

    nv.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    nv.nvmlDeviceGetAttributes = lambda h: types.SimpleNamespace(
        gpuInstanceSliceCount=h.mig["slices"], computeInstanceSliceCount=h.mig["slices"], memorySizeMB=h.mig["mem_mb"]
    )
    nv.nvmlDeviceGetGpuInstanceId = lambda h: h.mig["gi_id"]
    nv.nvmlDeviceGetGpuInstanceById = lambda h, gi: next(m for m in migs if m["gi_id"] == gi)
    nv.nvmlGpuInstanceGetInfo = lambda gi: types.SimpleNamespace(profileId=gi["profile_id"], id=gi["gi_id"])

    def profile_info(h: H, p: int) -> Any:
        row = profiles.get(p)
        if row is None or "err" in row:
            raise NVMLError(3)
        return types.SimpleNamespace(
            id=row["id"],
            sliceCount=row["slices"],
            instanceCount=row["instances"],
            memorySizeMB=row["mem_mb"],
            name=f"MIG {GI_NAMES[row['id']]}".encode(),
        )

    nv.nvmlDeviceGetGpuInstanceProfileInfo = profile_info

    def util(h: H) -> Any:
        if h.mig is not None:
            raise NVMLError(3)  # NVML has no utilization counter per MIG instance
        src = sample if sample is not None else h.dev["util_idle"]
        return types.SimpleNamespace(gpu=src["gpu"], memory=src["mem"])

    nv.nvmlDeviceGetUtilizationRates = util

    def procs(h: H) -> list[Any]:
        if sample is None or h.mig is not None:
            return []
        return [types.SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used"]) for p in sample["procs"]]

    nv.nvmlDeviceGetComputeRunningProcesses = procs
    nv.NVML_TEMPERATURE_GPU = 0

    def temperature(h: H, sensor: int) -> int:
        if h.mig is not None or sensor != 0:
            raise NVMLError(3)
        return 33  # nvidia-smi-query-gpu.csv: temperature.gpu of the same capture

    nv.nvmlDeviceGetTemperature = temperature
    return nv


@pytest.fixture
def inject(monkeypatch):
    def _inject(**kw: Any) -> types.ModuleType:
        mod = fake_pynvml(CAPTURE, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod

    return _inject


def test_cuda_version_string():
    assert cuda_version_string(13000) == "13.0"
    assert cuda_version_string(12040) == "12.4"
    assert cuda_version_string(11080) == "11.8"


def test_read_real_h200_capture(inject):
    nv = inject()
    src = NvmlSource()
    inv = src.read()
    assert inv.driver_version == "580.159.04" and inv.cuda_version == "13.0"
    (gpu,) = inv.devices
    assert gpu.uuid == H200_UUID and gpu.name == "NVIDIA H200" and gpu.index == 0
    assert gpu.memory_bytes == 150754820096 == 143771 * 1024**2  # agrees with nvidia-smi's MiB
    assert gpu.kind == "gpu" and not gpu.mig_enabled and gpu.equivalents == 1.0
    assert inv.allocatable == (gpu,) and inv.mig_instances == ()
    # NVML is initialised once and kept open until close().
    src.read()
    assert nv.state["init"] == 1
    src.close()
    src.close()
    assert nv.state["shutdown"] == 1


def test_utilization_and_processes_idle(inject):
    inject()
    src = NvmlSource()
    assert src.utilization() == {H200_UUID: DeviceUtil(gpu_percent=0.0, memory_used_bytes=0)}
    assert src.processes() == {H200_UUID: []}


def test_utilization_and_processes_busy(inject):
    first_busy = next(i for i, s in enumerate(CAPTURE["busy_samples"]) if s["gpu"] == 100)
    inject(busy_sample=first_busy)
    src = NvmlSource()
    u = src.utilization()[H200_UUID]
    assert u.gpu_percent == 100.0 and u.memory_used_bytes == 1050673152
    assert src.processes() == {H200_UUID: [442]}
    # The very first samples, before the matmul loop got going, read 0 % with the process present.
    inject(busy_sample=0)
    assert NvmlSource().utilization()[H200_UUID].gpu_percent == 0.0


def test_gi_profiles_from_capture(inject):
    inject()
    rows = NvmlSource().gi_profiles(0)
    # Profiles 5, 6, 8, 10, 11 answered NotSupported on this card and are left out.
    assert [(r["id"], r["slices"]) for r in rows] == [(19, 1), (14, 2), (9, 3), (5, 4), (0, 7), (20, 1), (15, 1)]
    assert rows[2]["memory_bytes"] == 71424 * 1024**2 and rows[0]["instances"] == 7
    assert rows[4]["name"] == "MIG 7g.141gb"


@pytest.mark.parametrize("mig_names", [True, False])
def test_mig_split_card(inject, mig_names):
    # Split the real H200 with its own profile table: 3g.71gb + 2g.35gb + 1g.18gb + 1g.18gb (7 slices).
    inject(mig_profiles=[2, 1, 0, 0], mig_names=mig_names)
    src = NvmlSource()
    inv = src.read()
    gpu = inv.gpus[0]
    assert gpu.mig_enabled and inv.whole_gpus == ()
    assert [(d.index, d.profile, d.slices) for d in inv.mig_instances] == [
        (0, "3g.71gb", 3),
        (1, "2g.35gb", 2),
        (2, "1g.18gb", 1),
        (3, "1g.18gb", 1),
    ]
    assert all(d.parent_uuid == H200_UUID and d.parent_index == 0 for d in inv.mig_instances)
    assert inv.mig_instances[0].memory_bytes == 71424 * 1024**2
    assert inv.mig_instances[0].name == "NVIDIA H200 MIG 3g.71gb"
    assert inv.total_equivalents == pytest.approx(1.0)
    assert inv.profiles == ("1g.18gb", "2g.35gb", "3g.71gb")
    util = src.utilization()
    assert util[H200_UUID].gpu_percent == 0.0
    assert util[inv.mig_instances[0].uuid].gpu_percent is None  # not reported per MIG instance
    # The allocator works on what NVML found.
    cfg = Config()
    lim = effective_limits(cfg, "alice", set())
    got = decide(inv, {}, GpuRequest(profile="3g.71gb"), lim, 0.0)
    assert isinstance(got, Allocation) and got.devices == (inv.mig_instances[0].uuid,)


def test_nvml_errors_become_runtime_failure(inject, monkeypatch):
    nv = inject()

    def boom() -> int:
        raise NVMLError(15)  # e.g. GPU is lost

    monkeypatch.setattr(nv, "nvmlDeviceGetCount", boom)
    with pytest.raises(RuntimeFailure, match="NVML"):
        NvmlSource().read()


def test_init_failure(inject):
    inject(init_error=12)
    with pytest.raises(RuntimeFailure, match="cannot initialise NVML"):
        NvmlSource().read()
    assert nvml_available() is False


def test_make_source_modes(inject):
    inject(init_error=9)  # driver not loaded
    assert isinstance(make_source(GpuConfig(inventory="auto")), SimulatedSource)
    with pytest.raises(ConfigError, match="nvml"):
        make_source(GpuConfig(inventory="nvml"))
    inject()
    assert isinstance(make_source(GpuConfig(inventory="auto")), NvmlSource)
    assert isinstance(make_source(GpuConfig(inventory="nvml")), NvmlSource)
    assert make_source(GpuConfig(inventory="nvml")).read().devices[0].uuid == H200_UUID


def test_missing_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert nvml_available() is False
    with pytest.raises(RuntimeFailure, match="nvidia-ml-py"):
        NvmlSource().read()


def test_temperature_per_whole_gpu(inject):
    inject()
    src = NvmlSource()
    assert src.temperatures() == {H200_UUID: 33.0}
    src.close()
