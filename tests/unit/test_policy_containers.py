"""Policy decides a container's security options (build_spec); the Docker backend only applies
them. The second half drives DockerBackend.create against a recording fake engine API."""

from __future__ import annotations

import threading

import pytest

from ds01 import labels
from ds01.models.config import Config
from ds01.models.container import Tmpfs
from ds01.policy.containers import build_spec

MiB, GiB = 1024**2, 1024**3


class _Who:
    uid, gid, name, group = 1001, 1002, "alice", "alice"


class _Lim:
    def __init__(self, memory: int):
        self.cpus, self.memory, self.shm_size, self.pids = 4.0, memory, 256 * MiB, 512


def _spec(memory: int = 16 * GiB, config: dict | None = None, **kw):
    return build_spec(Config.model_validate(config or {}), _Who(), "p", "ds01/base:latest", _Lim(memory),
                      "/home/alice/workspace/p", 1.0, "default", **kw)


# (memory limit, expected HOME tmpfs size): a quarter of the memory limit, within 64 MiB … 4 GiB
@pytest.mark.parametrize("memory, home_size", [
    (128 * MiB, 64 * MiB),     # a quarter would be 32 MiB: the floor
    (256 * MiB, 64 * MiB),     # exactly the floor
    (1 * GiB, 256 * MiB),
    (6 * GiB, 1536 * MiB),
    (16 * GiB, 4 * GiB),       # exactly the cap
    (512 * GiB, 4 * GiB),      # the cap
])
def test_home_tmpfs_is_a_bounded_quarter_of_memory(memory, home_size):
    spec = _spec(memory)
    assert spec.tmpfs == (Tmpfs("/home/alice", size=home_size, uid=1001, gid=1002, mode=0o700, exec=True),)
    assert spec.tmpfs[0].target == spec.account.home == spec.env["HOME"]


# Whatever the configuration, devices, ports or command: the same security options.
@pytest.mark.parametrize("config, kw", [
    ({}, {}),
    ({"gpu": {"binding": "device-requests"}}, {"device_ids": ("GPU-1", "GPU-2")}),
    ({"gpu": {"binding": "runtime"}}, {"device_ids": ("MIG-1",)}),
    ({"containers": {"data_mounts": [{"source": "/srv/data", "target": "/data"}]}}, {}),
    ({}, {"ports": ((8888, "127.0.0.1", 49152),), "command": ("python", "-m", "http.server")}),
    ({"containers": {"name_prefix": "lab"}}, {"host_cpus": 1}),
])
def test_security_options_are_fixed_by_policy(config, kw):
    spec = _spec(config=config, **kw)
    assert spec.cap_drop == ("ALL",)
    assert spec.no_new_privileges is True
    assert spec.init is True
    assert [t.target for t in spec.tmpfs] == ["/home/alice"]
    assert (spec.account.uid, spec.account.gid) == (1001, 1002)
    assert spec.labels[labels.MANAGED] == "true" and spec.labels[labels.UID] == "1001"


class _FakeApi:
    """The few engine calls create() makes, recorded."""

    def __init__(self):
        self.host_config: dict = {}
        self.created: list[dict] = []
        self.made_networks: list[str] = []
        self.network_labels: dict = {}

    def create_host_config(self, **kw):
        self.host_config = kw
        return kw

    def create_container(self, **kw):
        self.created.append(kw)
        return {"Id": f"c{len(self.created)}"}

    def inspect_image(self, ref):
        return {"Id": "sha256:img"}

    def get_archive(self, cid, path):
        from docker import errors

        raise errors.NotFound("no such file")

    def remove_container(self, cid, force=False, v=False):
        pass

    def networks(self, names=None, filters=None):
        return [{"Name": n, "Labels": self.network_labels} for n in names or [] if n in self.made_networks]

    def create_network(self, name, **kw):
        self.made_networks.append(name)
        self.network_labels = kw.get("labels") or {}

    def create_networking_config(self, endpoints):
        return {"EndpointsConfig": endpoints}

    def create_endpoint_config(self, aliases=None):
        return {"Aliases": aliases}


def _backend(tmp_path):
    from docker import errors, types

    from ds01.runtime.docker import DockerBackend

    b = object.__new__(DockerBackend)  # no engine connection
    b._docker = type("D", (), {"types": types})
    from ds01.runtime.accounts import AccountCache

    b._err, b.api, b._lock, b._accounts_cache = errors, _FakeApi(), threading.Lock(), AccountCache()
    b.accounts_dir = str(tmp_path)
    return b


def test_backend_applies_the_spec_as_decided(tmp_path):
    b = _backend(tmp_path)
    spec = _spec(1 * GiB)
    b.create(spec)
    hc = b.api.host_config
    assert hc["cap_drop"] == ["ALL"] and hc["security_opt"] == ["no-new-privileges:true"] and hc["init"] is True
    assert hc["tmpfs"] == {"/home/alice": f"exec,uid=1001,gid=1002,mode=0700,size={256 * MiB}"}
    # the account is installed one way: read-only bound files, merged from the image's own
    passwd = tmp_path / spec.name / "passwd"
    assert hc["binds"][str(passwd)] == {"bind": "/etc/passwd", "mode": "ro"}
    assert hc["binds"][str(tmp_path / spec.name / "group")] == {"bind": "/etc/group", "mode": "ro"}
    assert "alice:x:1001:1002:alice:/home/alice:/bin/sh" in passwd.read_text()
    probe, user = b.api.created
    assert probe["labels"] == {labels.PROBE: "passwd"} and user["user"] == "1001:1002"


def test_backend_adds_nothing_policy_did_not_decide(tmp_path):
    import dataclasses

    b = _backend(tmp_path)
    b.create(dataclasses.replace(_spec(), cap_drop=(), no_new_privileges=False, init=False, tmpfs=()))
    hc = b.api.host_config
    assert hc["cap_drop"] is None and hc["security_opt"] is None and hc["init"] is False and hc["tmpfs"] is None
