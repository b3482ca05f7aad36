"""Pure parts of issue 15's isolation: GPU hand-off volumes, user networks, build limits, and the
bounds on image account files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ds01.errors import InvalidInput, PolicyDenied
from ds01.policy.isolation import build_limits, gpu_handoff_path, refuse_gpu_handoff_volumes, user_network


@pytest.mark.parametrize("path", ["/var/run/nvidia-container-devices", "/var/run/nvidia-container-devices/all",
                                  "/run/nvidia-container-devices/GPU-1", "//var/run/./nvidia-container-devices/0",
                                  "var/run/nvidia-container-devices/0", "/x/../run/nvidia-container-devices/0",
                                  "/var/run/nvidia-container-devicesX"])
def test_gpu_handoff_paths_are_recognised(path):
    assert gpu_handoff_path(path)
    with pytest.raises(PolicyDenied, match="request GPUs"):
        refuse_gpu_handoff_volumes(["/data", path], "the image 'x'")


@pytest.mark.parametrize("path", ["/data", "/var/run", "/run", "/var/run/nvidia", "/workspace/run/nvidia-container-devices"])
def test_other_volumes_pass(path):
    assert not gpu_handoff_path(path)
    refuse_gpu_handoff_volumes([path], "the image 'x'")


def test_user_networks_are_per_instance_and_uid():
    assert user_network("default", 1001) == "ds01-default-u1001"
    assert len({user_network(i, u) for i in ("a", "b") for u in (1, 2)}) == 4


def test_build_limits_are_the_users_container_limits():
    lim = SimpleNamespace(pids=512, memory=2 * 1024**3, cpus=2.0)
    assert build_limits(lim, 8) == type(build_limits(lim, 8))(pids=512, memory=2 * 1024**3, cpus=2.0)
    assert build_limits(lim, 2).cpus is None  # not below the host's CPU count: no CPU limit


@pytest.mark.parametrize("line", ['VOLUME ["/var/run/nvidia-container-devices/all"]',
                                  "VOLUME /data /run/nvidia-container-devices/0",
                                  "VOLUME '/var/run/nvidia-container-devices/all'"])
def test_the_dockerfile_check_refuses_gpu_handoff_volumes(line):
    from ds01.images.dockerfile_check import check_dockerfile

    with pytest.raises(PolicyDenied, match="nvidia-container-devices"):
        check_dockerfile(f"FROM ds01/base:latest\n{line}\n")
    with pytest.raises(InvalidInput, match="variables in VOLUME"):
        check_dockerfile("FROM ds01/base:latest\nVOLUME $X\n")
    check_dockerfile("FROM ds01/base:latest\nVOLUME /data [\"/cache\"]\n")


def test_the_account_cache_is_bounded_by_bytes():
    from ds01.runtime.accounts import AccountCache

    c = AccountCache(max_bytes=1000)
    for i in range(10):
        c.put(f"img{i}", ("x" * 300, None))
    assert c.bytes <= 1000 and len(c) == 3 and c.get("img9") and c.get("img0") is None
    c.put("huge", ("x" * 5000, None))
    assert c.get("huge") is None and c.bytes <= 1000


def test_account_files_with_too_many_lines_are_refused():
    from ds01.runtime.accounts import MAX_ACCOUNT_FILE_LINES, check_account_text

    ok = "a:x:1:1::/:/bin/sh\n" * 10
    assert check_account_text("/etc/passwd", ok, "img") == ok
    with pytest.raises(PolicyDenied, match="oversized /etc/group"):
        check_account_text("/etc/group", "g:x:1:\n" * (MAX_ACCOUNT_FILE_LINES + 1), "img")


def test_the_backend_refuses_an_oversized_account_file_before_reading_it():
    import threading

    from docker import errors

    from ds01.runtime.accounts import MAX_ACCOUNT_FILE_BYTES, AccountCache
    from ds01.runtime.docker import DockerBackend

    read = []

    def stream():
        read.append(1)
        yield b"x" * 1024

    class Api:
        def get_archive(self, cid, path):
            return stream(), {"size": MAX_ACCOUNT_FILE_BYTES + 1}

    b = object.__new__(DockerBackend)
    b._err, b.api, b._lock, b._accounts_cache = errors, Api(), threading.Lock(), AccountCache()
    with pytest.raises(PolicyDenied, match="oversized /etc/passwd"):
        b._read_account_file("c1", "/etc/passwd", "img")
    assert not read


def test_the_backend_puts_a_container_on_its_users_network_only(tmp_path):
    from tests.unit.test_policy_containers import _backend, _spec

    b = _backend(tmp_path)
    spec = _spec()
    b.create(spec)
    assert b.api.made_networks == [spec.network] and spec.network.startswith("ds01-")
    assert b.api.host_config["network_mode"] == spec.network
    assert b.api.network_labels == {k: spec.labels[k] for k in ("ds01.managed", "ds01.instance", "ds01.uid")}
    assert b.api.created[-1]["networking_config"] == {"EndpointsConfig": {spec.network: {"Aliases": [spec.hostname]}}}


def test_build_spec_decides_the_users_network_and_refuses_gpu_handoff_volumes():
    from tests.unit.test_policy_containers import _spec

    assert _spec().network == "ds01-default-u1001"
    with pytest.raises(PolicyDenied, match="nvidia-container-devices"):
        _spec(image_volumes=["/data", "/var/run/nvidia-container-devices/all"])


def test_a_build_cgroup_is_capped_and_never_swept_while_its_build_runs(tmp_path):
    from ds01.runtime import build_cgroup as bc

    (tmp_path / "pids").mkdir()
    (tmp_path / "memory").mkdir()
    cg = bc.open_build_cgroup("cgroupfs", "1", "inst", 200, root=str(tmp_path))
    assert cg is not None and cg.parent.startswith("/ds01-build-inst-")
    d = tmp_path / "pids" / cg.name
    assert (d / "pids.max").read_text() == "200"
    (d / "pids.max").unlink()  # a real cgroup directory is removable with its control files
    (d / "pids.peak").write_text("200\n")
    assert cg.pids_exceeded()
    (d / "pids.peak").unlink()
    other = tmp_path / "pids" / "ds01-build-other-1"
    other.mkdir()
    assert bc.sweep(str(tmp_path), "inst", "1") == 0 and d.exists() and other.exists()
    cg.close()
    assert not d.exists() and other.exists()
    assert bc.open_build_cgroup("systemd", "2", "inst", 200, root=str(tmp_path)) is None
