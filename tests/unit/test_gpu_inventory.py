"""Inventory models, the simulated source, make_source, and the nvidia-smi parsers (real captures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ds01.errors import ConfigError
from ds01.gpu import EmptySource, SimulatedSource, make_source
from ds01.gpu.inventory import Device, DeviceUtil, Inventory, parse_profile
from ds01.gpu.simulated import build_inventory, sim_gpu_uuid, sim_mig_uuid
from ds01.gpu.smi import inventory_from_query_csv, inventory_from_xml, parse_query_csv, parse_smi_xml
from ds01.models.config import GpuConfig, SimulatedGpu, SimulatedInventory

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h200-mig-disabled"
H200_UUID = "GPU-a591441c-4e7d-555b-bff0-365d3b14540b"
H200_BYTES = 143771 * 1024**2


# -- models -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "profile, expected",
    [("3g.20gb", (3, 20)), ("1g.5gb", (1, 5)), ("7g.141gb", (7, 141)), ("1g.18gb+me", (1, 18)), (" 2G.10GB ", (2, 10))],
)
def test_parse_profile(profile, expected):
    assert parse_profile(profile) == expected


@pytest.mark.parametrize("bad", ["", "3g", "g.20gb", "8g.80gb", "0g.5gb", "3g.20", "three"])
def test_parse_profile_rejects(bad):
    with pytest.raises(ValueError):
        parse_profile(bad)


def test_default_simulated_inventory_shape():
    inv = SimulatedSource().read()
    assert [d.uuid for d in inv.gpus] == [sim_gpu_uuid(i) for i in range(4)]
    assert [d.uuid for d in inv.whole_gpus] == [sim_gpu_uuid(i) for i in range(3)]
    # The MIG-split card is not allocatable whole; its instances are.
    assert sim_gpu_uuid(3) not in {d.uuid for d in inv.allocatable}
    assert [d.uuid for d in inv.mig_instances] == [sim_mig_uuid(3, j) for j in range(4)]
    assert [d.profile for d in inv.mig_instances] == ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]
    assert [d.slices for d in inv.mig_instances] == [3, 2, 1, 1]
    assert inv.profiles == ("1g.5gb", "2g.10gb", "3g.20gb")
    assert inv.total_equivalents == pytest.approx(4.0)
    mig = inv.device(sim_mig_uuid(3, 0))
    assert mig is not None and mig.equivalents == pytest.approx(3 / 7)
    assert mig.parent_uuid == sim_gpu_uuid(3) and mig.parent_index == 3 and mig.label == "3:0"
    assert mig.name.endswith("MIG 3g.20gb") and mig.memory_bytes == 20 * 1024**3
    assert inv.device(sim_gpu_uuid(0)).equivalents == 1.0
    assert inv.children(sim_gpu_uuid(3)) == inv.mig_instances
    assert inv.driver_version == "550.54.15" and inv.cuda_version == "12.4"


def test_simulated_is_deterministic():
    cfg = SimulatedInventory()
    assert SimulatedSource(cfg).read() == SimulatedSource(cfg).read()
    assert SimulatedSource(cfg).read().to_dict() == build_inventory(cfg).to_dict()


def test_simulated_rejects_oversplit_card_and_bad_profile():
    with pytest.raises(ConfigError, match="8 compute slices"):
        build_inventory(SimulatedInventory(gpus=[SimulatedGpu(mig=["4g.20gb", "4g.20gb"])]))
    with pytest.raises(ConfigError, match=r"gpus\[0\]\.mig\[1\]"):
        build_inventory(SimulatedInventory(gpus=[SimulatedGpu(mig=["1g.5gb", "bogus"])]))


def test_simulated_mig_enabled_with_no_instances():
    inv = build_inventory(SimulatedInventory(gpus=[SimulatedGpu(mig=[])]))
    assert inv.gpus[0].mig_enabled and inv.allocatable == () and inv.total_equivalents == 0


def test_simulated_utilization_hooks():
    src = SimulatedSource()
    assert src.utilization()[sim_gpu_uuid(0)] == DeviceUtil(0.0, 0)
    src.set_utilization(sim_gpu_uuid(1), 87.5, 1024)
    src.set_processes(sim_mig_uuid(3, 2), [42, 7])
    assert src.utilization()[sim_gpu_uuid(1)] == DeviceUtil(87.5, 1024)
    assert src.processes()[sim_mig_uuid(3, 2)] == [42, 7]
    with pytest.raises(KeyError):
        src.set_utilization("GPU-nope", 1.0)
    # The returned dicts are copies: callers cannot change the source.
    src.processes()[sim_mig_uuid(3, 2)].append(1)
    assert src.processes()[sim_mig_uuid(3, 2)] == [42, 7]


def test_inventory_rejects_duplicate_uuids_and_counts_equivalents():
    a = Device(uuid="GPU-a", index=0, name="x", memory_bytes=1)
    with pytest.raises(ValueError, match="duplicate"):
        Inventory(devices=(a, a))
    inv = SimulatedSource().read()
    assert inv.equivalents_of([sim_gpu_uuid(0), sim_mig_uuid(3, 2), "GPU-gone"]) == pytest.approx(1 + 1 / 7)
    all_mig = [d.uuid for d in inv.mig_instances]
    assert inv.equivalents_of(all_mig) == 1.0  # 3+2+1+1 slices: exactly one card, no float drift


def test_empty_and_make_source():
    assert EmptySource().read() == Inventory() and EmptySource().utilization() == {}
    assert isinstance(make_source(GpuConfig(inventory="none")), EmptySource)
    src = make_source(GpuConfig(inventory="simulated"))
    assert isinstance(src, SimulatedSource) and len(src.read().gpus) == 4


def test_importing_gpu_and_policy_does_not_import_pynvml():
    code = (
        "import sys, ds01.gpu, ds01.gpu.nvml, ds01.gpu.smi, ds01.policy.allocation, ds01.policy.queue, "
        "ds01.policy.limits; assert 'pynvml' not in sys.modules, 'pynvml imported'"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# -- nvidia-smi parsers against the real H200 captures ------------------------------------------


def test_query_gpu_csv_capture():
    rows = parse_query_csv((FIX / "nvidia-smi-query-gpu.csv").read_text())
    assert len(rows) == 1
    r = rows[0]
    assert r["index"] == 0 and r["uuid"] == H200_UUID and r["name"] == "NVIDIA H200"
    assert r["pci.bus_id"] == "00000000:00:06.0"
    assert r["memory.total"] == H200_BYTES and r["memory.used"] == 0
    assert r["utilization.gpu"] == 0.0 and r["temperature.gpu"] == 33
    assert r["power.draw"] == pytest.approx(78.61) and r["mig.mode.current"] == "Disabled"
    inv = inventory_from_query_csv((FIX / "nvidia-smi-query-gpu.csv").read_text(), "580.159.04", "13.0")
    assert [d.uuid for d in inv.allocatable] == [H200_UUID] and not inv.gpus[0].mig_enabled


@pytest.mark.parametrize("name", ["nvidia-smi-query-apps-idle.csv", "nvidia-smi-query-apps-busy.csv"])
def test_query_apps_csv_capture_header_only(name):
    assert parse_query_csv((FIX / name).read_text()) == []


def test_query_csv_values_and_errors():
    text = "index, memory.used [MiB], power.draw [W], pid\n3, [N/A], [Not Supported], 1234\n"
    assert parse_query_csv(text) == [{"index": 3, "memory.used": None, "power.draw": None, "pid": 1234}]
    assert parse_query_csv("") == []
    with pytest.raises(ValueError, match="fields"):
        parse_query_csv("a, b\n1\n")


def test_smi_xml_capture():
    report = parse_smi_xml((FIX / "nvidia-smi-q.xml").read_text())
    assert report.driver_version == "580.159.04" and report.cuda_version == "13.0"
    (g,) = report.gpus
    assert g.uuid == H200_UUID and g.name == "NVIDIA H200" and g.pci_bus_id == "00000000:00:06.0"
    assert g.memory_total_bytes == H200_BYTES and g.memory_used_bytes == 0
    assert g.gpu_util_percent == 0.0 and g.mig_current == "Disabled" and g.mig_pending == "Disabled"
    assert g.mig_devices == () and g.processes == ()
    inv = inventory_from_xml((FIX / "nvidia-smi-q.xml").read_text())
    csv_inv = inventory_from_query_csv((FIX / "nvidia-smi-query-gpu.csv").read_text(), "580.159.04", "13.0")
    assert inv == csv_inv


MIG_XML = """<?xml version="1.0" ?>
<nvidia_smi_log><driver_version>550.54.15</driver_version><cuda_version>12.4</cuda_version>
<gpu id="00000000:07:00.0"><product_name>NVIDIA A100-SXM4-40GB</product_name>
<mig_mode><current_mig>Enabled</current_mig><pending_mig>Enabled</pending_mig></mig_mode>
<mig_devices>
 <mig_device><index>0</index><gpu_instance_id>2</gpu_instance_id><compute_instance_id>0</compute_instance_id>
  <name>NVIDIA A100-SXM4-40GB MIG 3g.20gb</name><uuid>MIG-11111111-2222-3333-4444-555555555555</uuid>
  <fb_memory_usage><total>19968 MiB</total></fb_memory_usage></mig_device>
 <mig_device><index>1</index><gpu_instance_id>9</gpu_instance_id><compute_instance_id>0</compute_instance_id>
  <fb_memory_usage><total>4864 MiB</total></fb_memory_usage></mig_device>
</mig_devices>
<uuid>GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</uuid>
<fb_memory_usage><total>40960 MiB</total><used>100 MiB</used></fb_memory_usage>
<utilization><gpu_util>N/A</gpu_util><memory_util>N/A</memory_util></utilization>
<processes><process_info><gpu_instance_id>2</gpu_instance_id><compute_instance_id>0</compute_instance_id>
 <pid>4242</pid><type>C</type><process_name>python</process_name><used_memory>512 MiB</used_memory></process_info>
</processes></gpu></nvidia_smi_log>"""


def test_smi_xml_mig_layout():
    (g,) = parse_smi_xml(MIG_XML).gpus
    assert g.gpu_util_percent is None and g.mig_current == "Enabled"
    assert [(m.index, m.gpu_instance_id, m.profile, m.slices) for m in g.mig_devices] == [
        (0, 2, "3g.20gb", 3),
        (1, 9, None, None),
    ]
    assert g.processes[0].pid == 4242 and g.processes[0].used_memory_bytes == 512 * 1024**2
    assert g.processes[0].gpu_instance_id == 2
    inv = inventory_from_xml(MIG_XML)
    # The parent is not allocatable; the instance without a uuid/profile cannot be, so is left out.
    assert [d.uuid for d in inv.allocatable] == ["MIG-11111111-2222-3333-4444-555555555555"]
    assert inv.allocatable[0].memory_bytes == 19968 * 1024**2
