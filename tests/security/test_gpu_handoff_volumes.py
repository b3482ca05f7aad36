"""GPU hand-off cannot be requested by an image (issue 15, item 9): a VOLUME under
/var/run/nvidia-container-devices (which the NVIDIA runtime can read as a device request) is
refused at container create (the image's config) and in the Dockerfile check."""

from __future__ import annotations

import io
import pwd
import tarfile

import pytest

from tests.integration.harness import USERS, unique_project, write_as

PATHS = ["/var/run/nvidia-container-devices/all", "/run/nvidia-container-devices/GPU-0"]


@pytest.fixture
def volume_image(docker_client):
    made: list[str] = []

    def make(path: str) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            ti = tarfile.TarInfo("etc")
            ti.type = tarfile.DIRTYPE
            tar.addfile(ti)
        tag = f"ds01-test/gpu-volume-{len(made)}:latest"
        docker_client.api.import_image_from_data(buf.getvalue(), repository=tag.split(":")[0], tag="latest",
                                                 changes=[f"VOLUME {path}"])
        made.append(tag)
        return tag

    yield make
    for tag in made:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


@pytest.mark.parametrize("path", PATHS)
def test_an_image_volume_under_the_gpu_device_list_is_refused_at_create(daemon, docker_client, volume_image, path):
    image, p = volume_image(path), unique_project("gpuvol")
    r = daemon.run("alice", "container-create", p, "--image", image)
    assert r.returncode == 6 and f"VOLUME {path}" in r.stderr and "request GPUs" in r.stderr, r.stderr
    assert not [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == p]


@pytest.mark.parametrize("line", ['VOLUME ["/var/run/nvidia-container-devices/all"]',
                                  "VOLUME /data /run/nvidia-container-devices/GPU-0",
                                  'VOLUME "//var/run/./nvidia-container-devices/0"'])
def test_a_dockerfile_volume_under_the_gpu_device_list_is_refused(daemon, projects, line):
    p = unique_project("gpudf")
    projects.append(("alice", p))
    home = pwd.getpwnam(USERS["alice"]).pw_dir
    write_as("alice", f"{home}/workspace/{p}/Dockerfile", f"FROM ds01-test/busybox:latest\n{line}\n")
    r = daemon.run("alice", "image-create", p)
    assert r.returncode == 6 and "nvidia-container-devices" in r.stderr and "request GPUs" in r.stderr, r.stderr
