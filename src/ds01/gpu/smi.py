"""Parsers for nvidia-smi output, for admin diagnostics and tests only.

The daemon reads GPUs through NVML (``ds01.gpu.nvml``); it never runs nvidia-smi. These functions
take text an admin captured (``nvidia-smi --query-gpu=... --format=csv``, ``nvidia-smi -q -x``)
and turn it into plain values or an ``Inventory``, so a capture from a real host can be compared
with what NVML reports.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from ds01.gpu.inventory import MIG_SLICES, Device, Inventory

_UNIT = re.compile(r"^(.*?)\s*\[(.+)\]$")
_NUM_UNIT = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([A-Za-z%]+)?$")
_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
_NA = {"n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "none", ""}
_MIG_PROFILE = re.compile(r"(\d+g\.\d+gb(?:\+me)?)", re.I)


def _value(raw: str) -> Any:
    """``"143771 MiB"`` -> bytes, ``"0 %"`` -> 0.0, ``"78.61 W"`` -> 78.61, ``"[N/A]"`` -> None,
    ``"33"`` -> 33, anything else stays a string."""
    text = raw.strip()
    if text.lower() in _NA:
        return None
    m = _NUM_UNIT.match(text)
    if not m:
        return text
    number, unit = m.group(1), m.group(2)
    if unit in _BYTES:
        return int(float(number) * _BYTES[unit])
    if unit is None and re.fullmatch(r"-?\d+", number):
        return int(number)
    return float(number)


def parse_query_csv(text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-*=... --format=csv`` (with header, units allowed).

    Keys are the query field names without their unit (``memory.total``); values are converted:
    sizes to bytes, percentages/watts to floats, integers to int, ``[N/A]`` to None.
    """
    reader = csv.reader(io.StringIO(text.strip()), skipinitialspace=True)
    rows = [r for r in reader if r and any(c.strip() for c in r)]
    if not rows:
        return []
    keys = []
    for h in rows[0]:
        m = _UNIT.match(h.strip())
        keys.append(m.group(1) if m else h.strip())
    out = []
    for r in rows[1:]:
        if len(r) != len(keys):
            raise ValueError(f"nvidia-smi CSV row has {len(r)} fields, header has {len(keys)}: {r!r}")
        out.append({k: _value(v) for k, v in zip(keys, r)})
    return out


def inventory_from_query_csv(text: str, driver_version: str | None = None, cuda_version: str | None = None) -> Inventory:
    """Whole GPUs from a ``--query-gpu=index,uuid,name,memory.total[,mig.mode.current]`` capture.

    The CSV query cannot list MIG instances; use ``inventory_from_xml`` for MIG hosts.
    """
    devices = []
    for row in parse_query_csv(text):
        devices.append(
            Device(
                uuid=str(row["uuid"]),
                index=int(row["index"]),
                name=str(row["name"]),
                memory_bytes=int(row.get("memory.total") or 0),
                kind="gpu",
                mig_enabled=str(row.get("mig.mode.current") or "").lower() == "enabled",
            )
        )
    return Inventory(driver_version=driver_version, cuda_version=cuda_version, devices=tuple(devices))


@dataclass(frozen=True)
class SmiProcess:
    pid: int
    name: str | None
    used_memory_bytes: int | None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


@dataclass(frozen=True)
class SmiMigDevice:
    index: int
    gpu_instance_id: int | None
    compute_instance_id: int | None
    uuid: str | None
    profile: str | None
    slices: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class SmiGpu:
    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    gpu_util_percent: float | None
    memory_util_percent: float | None
    mig_current: str | None
    mig_pending: str | None
    mig_devices: tuple[SmiMigDevice, ...] = ()
    processes: tuple[SmiProcess, ...] = ()


@dataclass(frozen=True)
class SmiReport:
    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[SmiGpu, ...] = field(default_factory=tuple)


def _t(el: ET.Element | None, path: str) -> Any:
    if el is None:
        return None
    node = el.find(path)
    if node is None or node.text is None:
        return None
    return _value(node.text)


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def parse_smi_xml(text: str) -> SmiReport:
    """Parse ``nvidia-smi -q -x``. Tolerant of fields a driver leaves out (they become None).

    The document's DOCTYPE names an external DTD; ElementTree never fetches it.
    """
    root = ET.fromstring(text)
    gpus = []
    for pos, g in enumerate(root.findall("gpu")):
        migs = []
        for md in g.findall("mig_devices/mig_device"):
            name = md.findtext("name") or md.findtext("device_attributes/shared/name") or ""
            pm = _MIG_PROFILE.search(name)
            migs.append(
                SmiMigDevice(
                    index=_int(_t(md, "index")) or 0,
                    gpu_instance_id=_int(_t(md, "gpu_instance_id")),
                    compute_instance_id=_int(_t(md, "compute_instance_id")),
                    uuid=(md.findtext("uuid") or None),
                    profile=pm.group(1).lower() if pm else None,
                    slices=int(pm.group(1).split("g")[0]) if pm else None,
                    memory_total_bytes=_int(_t(md, "fb_memory_usage/total")),
                )
            )
        procs = []
        for p in g.findall("processes/process_info"):
            pid = _int(_t(p, "pid"))
            if pid is None:
                continue
            procs.append(
                SmiProcess(
                    pid=pid,
                    name=p.findtext("process_name"),
                    used_memory_bytes=_int(_t(p, "used_memory")),
                    gpu_instance_id=_int(_t(p, "gpu_instance_id")),
                    compute_instance_id=_int(_t(p, "compute_instance_id")),
                )
            )
        gpus.append(
            SmiGpu(
                # minor_number is the /dev/nvidiaN number; NVML's index is document order.
                index=pos,
                uuid=(g.findtext("uuid") or "").strip(),
                name=(g.findtext("product_name") or "").strip(),
                pci_bus_id=g.get("id"),
                memory_total_bytes=_int(_t(g, "fb_memory_usage/total")),
                memory_used_bytes=_int(_t(g, "fb_memory_usage/used")),
                gpu_util_percent=_float(_t(g, "utilization/gpu_util")),
                memory_util_percent=_float(_t(g, "utilization/memory_util")),
                mig_current=_t(g, "mig_mode/current_mig"),
                mig_pending=_t(g, "mig_mode/pending_mig"),
                mig_devices=tuple(migs),
                processes=tuple(procs),
            )
        )
    return SmiReport(
        driver_version=(root.findtext("driver_version") or None),
        cuda_version=(root.findtext("cuda_version") or None),
        gpus=tuple(gpus),
    )


def inventory_from_xml(text: str) -> Inventory:
    """An ``Inventory`` from ``nvidia-smi -q -x`` (MIG instances included where listed with a
    uuid; older drivers omit MIG uuids, and such instances cannot be allocated, so are left out)."""
    report = parse_smi_xml(text)
    devices: list[Device] = []
    for g in report.gpus:
        mig_on = str(g.mig_current or "").lower() == "enabled"
        gpu = Device(
            uuid=g.uuid,
            index=g.index,
            name=g.name,
            memory_bytes=g.memory_total_bytes or 0,
            kind="gpu",
            mig_enabled=mig_on,
        )
        devices.append(gpu)
        if not mig_on:
            continue
        for md in g.mig_devices:
            if not md.uuid or not md.profile or not md.slices:
                continue
            devices.append(
                Device(
                    uuid=md.uuid,
                    index=md.index,
                    name=f"{g.name} MIG {md.profile}",
                    memory_bytes=md.memory_total_bytes or 0,
                    kind="mig",
                    parent_uuid=gpu.uuid,
                    parent_index=gpu.index,
                    profile=md.profile,
                    slices=min(md.slices, MIG_SLICES),
                )
            )
    return Inventory(driver_version=report.driver_version, cuda_version=report.cuda_version, devices=tuple(devices))
