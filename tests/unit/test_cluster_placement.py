"""Cluster mode's pure parts and its services with fakes (issue 18): device keys, the agent's
job checks, binding a spec to the job's GPUs, the request digest, MUNGE's output, the spec's
wire form, the node agent's refusals and its sweep, and the head's routing runtime."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01 import labels
from ds01.errors import NodeUnavailable, NotFound, PermissionDenied
from ds01.models.config import Config
from ds01.models.container import spec_from_dict, spec_to_dict
from ds01.policy.containers import build_spec
from ds01.policy.limits import effective_limits
from ds01.policy.placement import (Pending, Placed, bind_devices, device_key, job_refusal, outcome,
                                   parse_device_key, request_digest)
from ds01.policy.slurm import SlurmJob
from ds01.runtime.base import ContainerInfo
from ds01.runtime.munge import parse_unmunge


def job(**kw) -> SlurmJob:
    d = dict(id=7, name="ds01-default-u1001-p", user_id=1001, state="RUNNING", reason=None, node="n1",
             gres_type="h200", gpu_indices=(1,), start_time=None, time_limit_s=3600, partition="ds01")
    d.update(kw)
    return SlurmJob(**d)


class Who:
    uid, gid, name, group = 1001, 1002, "alice", "alice"


def spec(workspace: str = "/home/alice/workspace/p", devices=("0",)):
    cfg = Config()
    s = build_spec(cfg, Who(), "p", "ds01/base:latest", effective_limits(cfg, "alice", set()), workspace, 1.0,
                   "default", device_ids=tuple(devices))
    return dataclasses.replace(s, labels={**s.labels, labels.NODE: "n1", labels.SLURM_JOB: "7"})


@given(st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=20), st.integers(0, 4096))
def test_device_key_round_trips(node, index):
    assert parse_device_key(device_key(node, index)) == (node, index)


@pytest.mark.parametrize("key", ["", "gpu0", "/gpu0", "n1/gpu", "n1/gpux", "GPU-sim-0000"])
def test_not_a_device_key(key):
    assert parse_device_key(key) is None


@pytest.mark.parametrize("j, why", [
    (None, "does not know"),
    (job(id=8), "not 7"),
    (job(state="PENDING", node=None), "PENDING"),
    (job(state="COMPLETED"), "COMPLETED"),
    (job(user_id=1002), "belongs to uid 1002"),
    (job(node="n2"), "runs on n2"),
])
def test_agent_refuses_what_is_not_a_live_job_of_that_user_here(j, why):
    assert why in job_refusal(j, job_id=7, node="n1", uid=1001)


def test_agent_accepts_a_running_job_of_that_user_on_its_node():
    assert job_refusal(job(), job_id=7, node="n1", uid=1001) is None


def test_outcome():
    assert outcome(None, 7) is None
    assert outcome(job(state="CANCELLED"), 7) is None
    assert outcome(job(), 7) == Placed(7, "n1", (1,))
    p = outcome(job(state="PENDING", node=None, reason="Resources", start_time=5.0), 7)
    assert p == Pending(7, "Resources", 5.0)
    assert Placed(7, "n1", (0, 2)).devices == {"n1/gpu0": 1.0, "n1/gpu2": 1.0}
    assert Placed(7, "n1", (0, 2)).device_ids == ("0", "2")


def test_bind_devices_takes_the_jobs_gpus_not_the_requests():
    s = bind_devices(spec(devices=("0", "1")), job(gpu_indices=(1,)), "n1")
    # the runtime shows card 1 alone, as CUDA device 0
    assert s.env["NVIDIA_VISIBLE_DEVICES"] == "1" and s.env["CUDA_VISIBLE_DEVICES"] == "0"
    two = bind_devices(spec(), job(gpu_indices=(0, 3)), "n1")
    assert two.env["NVIDIA_VISIBLE_DEVICES"] == "0,3" and two.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert s.gpu_device_ids == ("1",) and s.labels[labels.GPUS] == "n1/gpu1"
    assert s.labels[labels.SLURM_JOB] == "7" and s.labels[labels.NODE] == "n1"
    cpu = bind_devices(spec(devices=("0",)), job(gpu_indices=()), "n1")
    assert cpu.env["NVIDIA_VISIBLE_DEVICES"] == "void" and cpu.gpu_device_ids == ()


def test_request_digest_binds_method_path_and_body():
    d = request_digest("POST", "/v1/containers", b"{}")
    assert d != request_digest("GET", "/v1/containers", b"{}")
    assert d != request_digest("POST", "/v1/containers/x/start", b"{}")
    assert d != request_digest("POST", "/v1/containers", b'{"a":1}')
    assert d == request_digest("post", "/v1/containers", b"{}")


def test_parse_unmunge():
    text = ("STATUS:          Success (0)\nENCODE_HOST:     localhost (127.0.0.1)\nUID:             root (0)\n"
            "GID:             root (0)\nLENGTH:          10\n\nGET /x abc")
    d = parse_unmunge(text)
    assert (d.uid, d.gid, d.payload) == (0, 0, "GET /x abc")
    with pytest.raises(PermissionDenied):
        parse_unmunge("STATUS: Success (0)\n\npayload")  # no uid


def test_spec_wire_form_round_trips():
    s = spec()
    assert spec_from_dict(spec_to_dict(s)) == s


# -- the node agent, with a fake engine and a fake Slurm ----------------------------------------
class FakeRuntime:
    def __init__(self):
        self.created = []
        self.containers: dict[str, ContainerInfo] = {}
        self.stopped = []

    def create(self, s):
        self.created.append(s)
        info = ContainerInfo(id=f"c{len(self.created)}", name=s.name, status="created", image=s.image,
                             labels=dict(s.labels))
        self.containers[info.id] = info
        return info

    def image_exists(self, ref):
        return True

    def inspect(self, cid):
        return self.containers.get(cid)

    def list(self, selector):
        return [i for i in self.containers.values() if all(i.labels.get(k) == v for k, v in selector.items())]

    def start(self, cid):
        self.containers[cid].status = "running"

    def stop(self, cid, timeout):
        self.stopped.append(cid)
        self.containers[cid].status = "exited"


class FakeSlurm:
    def __init__(self, jobs):
        self.jobs = jobs

    def job(self, job_id):
        return self.jobs.get(job_id)


@pytest.fixture
def agent(tmp_path, monkeypatch):
    from ds01.services.node import NodeAgent

    ws = tmp_path / "home" / "alice" / "workspace" / "p"
    ws.mkdir(parents=True)
    import os

    os.chown(ws, 1001, 1002) if os.geteuid() == 0 else None
    monkeypatch.setattr("ds01.services.node._home", lambda uid: str(tmp_path / "home" / "alice"))
    monkeypatch.setattr("os.stat", _stat_as(1001, os.stat))
    return NodeAgent("n1", FakeRuntime(), FakeSlurm({7: job(gpu_indices=(1,))}), "default"), str(ws)


def _stat_as(uid, real):
    def fake(path, *a, **kw):
        st_ = real(path, *a, **kw)
        return type("S", (), {"st_uid": uid, "st_mode": st_.st_mode})()
    return fake


def test_agent_creates_with_the_jobs_devices(agent):
    a, ws = agent
    out = a.create({"spec": spec_to_dict(spec(ws, devices=("0",))), "job": 7})
    made = a.runtime.created[0]
    assert made.env["NVIDIA_VISIBLE_DEVICES"] == "1" and out["labels"][labels.SLURM_JOB] == "7"


def test_agent_refuses_a_job_of_another_user(agent):
    a, ws = agent
    a.slurm.jobs[7] = job(user_id=1002)
    with pytest.raises(PermissionDenied):
        a.create({"spec": spec_to_dict(spec(ws)), "job": 7})
    assert a.runtime.created == []


def test_agent_refuses_a_spec_without_isolation(agent):
    a, ws = agent
    bad = dataclasses.replace(spec(ws), cap_drop=())
    with pytest.raises(PermissionDenied):
        a.create({"spec": spec_to_dict(bad), "job": 7})
    assert a.runtime.created == []


def test_agent_refuses_a_workspace_outside_the_users_home(agent, tmp_path):
    a, _ = agent
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(PermissionDenied):
        a.create({"spec": spec_to_dict(spec(str(other))), "job": 7})


def test_agent_touches_only_its_nodes_ds01_containers(agent):
    a, ws = agent
    a.runtime.containers["x"] = ContainerInfo(id="x", name="x", status="running", image="i",
                                              labels={labels.MANAGED: "true", labels.INSTANCE: "default",
                                                      labels.NODE: "n2"})
    with pytest.raises(NotFound):
        a.stop("x", 1)
    assert a.remove("x", True) is False


def test_sweep_stops_a_container_whose_job_ended(agent):
    a, ws = agent
    cid = a.create({"spec": spec_to_dict(spec(ws)), "job": 7})["id"]
    a.start(cid)
    assert a.sweep() == 0
    a.slurm.jobs[7] = job(state="CANCELLED")
    assert a.sweep() == 1 and a.runtime.stopped == [cid]


def test_start_refused_once_the_job_ended(agent):
    a, ws = agent
    cid = a.create({"spec": spec_to_dict(spec(ws)), "job": 7})["id"]
    del a.slurm.jobs[7]
    with pytest.raises(PermissionDenied):
        a.start(cid)


# -- the head's runtime over agents --------------------------------------------------------------
class FakeNode:
    def __init__(self, name, rows, down=False):
        self.name, self.rows, self.is_down = name, rows, down
        self.calls = []

    def call(self, method, path, body=None, timeout=None):
        self.calls.append((method, path))
        if self.is_down:
            raise NodeUnavailable(f"{self.name} down")
        if path == "/v1/list":
            return self.rows
        if method == "GET" and path.startswith("/v1/containers/"):
            cid = path.split("/")[3]
            return next((r for r in self.rows if r["id"] == cid), None)
        return True


def _row(cid, node):
    return dataclasses.asdict(ContainerInfo(id=cid, name=cid, status="running", image="i", labels={labels.NODE: node}))


def test_cluster_runtime_routes_by_node_and_never_calls_a_down_node_gone():
    from ds01.runtime.cluster import ClusterRuntime

    n1, n2 = FakeNode("n1", [_row("a", "n1")]), FakeNode("n2", [_row("b", "n2")], down=True)
    where = {"a": "n1", "b": "n2"}
    rt = ClusterRuntime(local=None, nodes={"n1": n1, "n2": n2}, node_of=where.get)
    assert [i.id for i in rt.list({})] == ["a"] and rt.down == {"n2"}
    assert rt.inspect("a").id == "a"
    with pytest.raises(NodeUnavailable):
        rt.inspect("b")  # its node is down: unknown, not "gone"
    rt.stop("a", 1)
    assert ("POST", "/v1/containers/a/stop") in n1.calls
    with pytest.raises(NodeUnavailable):
        rt.inspect("zzz")  # not on n1, and n2 did not answer: it may be there
    n2.is_down = False
    assert rt.inspect("zzz") is None  # on no node at all


@pytest.mark.parametrize("registry, image, want", [
    ("", "ds01/u1001-p:latest", None),
    ("reg:5000", "ds01/u1001-p:latest", ("reg:5000/ds01/u1001-p", "latest")),
    ("reg:5000/lab", "ds01/base", ("reg:5000/lab/ds01/base", "latest")),
    ("reg:5000", "python:3.11", ("reg:5000/python", "3.11")),
    ("reg:5000", "nvcr.io/nvidia/pytorch:24.01-py3", None),  # the node pulls it from its registry
    ("reg:5000", "localhost/x:1", None),
    ("reg:5000", "sha256:abcd", None),
])
def test_registry_ref(registry, image, want):
    from ds01.policy.placement import registry_ref

    assert registry_ref(registry, image) == want


def test_ports_are_refused_in_cluster_mode_only():
    from ds01.errors import InvalidInput
    from ds01.policy.containers import check_ports

    assert check_ports([8888]) == [8888]
    with pytest.raises(InvalidInput, match="cluster mode"):
        check_ports([8888], cluster=True)
    assert check_ports([], cluster=True) == []
    for bad in ([0], [70000], [True], list(range(1, 6))):
        with pytest.raises(InvalidInput):
            check_ports(bad)


def test_agent_refuses_a_second_container_for_one_job(agent):
    a, ws = agent
    a.create({"spec": spec_to_dict(spec(ws)), "job": 7})
    with pytest.raises(PermissionDenied, match="already has a container"):
        a.create({"spec": spec_to_dict(dataclasses.replace(spec(ws), name="other")), "job": 7})
    assert len(a.runtime.created) == 1


def test_agent_checks_the_allowed_images_too(agent):
    from ds01.errors import DS01Error

    a, ws = agent
    a.allowed = ["ds01-test/"]
    with pytest.raises(DS01Error):
        a.create({"spec": spec_to_dict(spec(ws)), "job": 7})  # ds01/base is not in this list
    assert a.runtime.created == []


def test_usage_by_node():
    from ds01.policy.usage import AllocationInterval, ContainerInterval, account

    allocs = [AllocationInterval("alice", "p", 1.0, 0, 3600, "ds01n1/gpu0"),
              AllocationInterval("bob", "q", 1.0, 0, 1800, "ds01n2/gpu1"),
              AllocationInterval("carol", "r", 1.0, 0, 3600, "GPU-sim-0000")]
    conts = [ContainerInterval("alice", "p", 0, 3600, node="ds01n1"), ContainerInterval("carol", "r", 0, 7200)]
    rows = {r.key: r for r in account(allocs, conts, 0, 7200, "node")}
    assert rows["ds01n1"].gpu_hours == 1.0 and rows["ds01n1"].container_hours == 1.0
    assert rows["ds01n2"].gpu_hours == 0.5
    assert rows["(this server)"].gpu_hours == 1.0 and rows["(this server)"].container_hours == 2.0
