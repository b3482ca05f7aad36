"""The root daemon reads image content with bounds (issue 15, item 4): an image's /etc/passwd
and /etc/group are read for the account merge only up to a size and a line count; beyond, the
image is refused with a clear error, and the daemon's memory does not grow with the file."""

from __future__ import annotations

import io
import tarfile
import tempfile

import pytest

from tests.integration.harness import unique_project


def _image(client, tag: str, files: dict[str, bytes | int]) -> str:
    """An image of just ``files`` (content, or a size in bytes of one repeated passwd line)."""
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        with tarfile.open(fileobj=f, mode="w") as tar:
            for path, content in files.items():
                ti = tarfile.TarInfo(path)
                if isinstance(content, int):
                    line = b"user:x:5000:5000::/home/user:/bin/sh\n"
                    n = content // len(line) + 1
                    ti.size = n * len(line)
                    src = io.BytesIO(line * n)
                else:
                    ti.size, src = len(content), io.BytesIO(content)
                tar.addfile(ti, src)
        f.flush()
        client.api.import_image_from_file(f.name, repository=tag.split(":")[0], tag=tag.split(":")[1])
    return tag


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def images(docker_client):
    made: list[str] = []
    yield made
    for tag in made:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


def test_an_image_with_a_huge_passwd_is_refused_without_reading_it(daemon, docker_client, images):
    images.append(_image(docker_client, "ds01-test/huge-passwd:latest", {"etc/passwd": 96 * 1024**2}))
    before, p = _peak_rss(daemon.proc.pid), unique_project("pw")
    r = daemon.run("alice", "container-create", p, "--image", images[0])
    assert r.returncode == 6, r.stderr
    assert "oversized /etc/passwd" in r.stderr and "bytes; the limit is" in r.stderr
    assert _peak_rss(daemon.proc.pid) - before < 16 * 1024**2  # the file was never held in memory
    assert not [c for c in daemon.containers(docker_client) if c.labels.get("ds01.project") == p]


def test_an_image_with_too_many_group_lines_is_refused(daemon, docker_client, images):
    # small in bytes, many lines
    lines = b"".join(b"g%d:x:%d:\n" % (i, 10000 + i) for i in range(60_000))
    images.append(_image(docker_client, "ds01-test/many-groups:latest", {"etc/group": lines}))
    r = daemon.run("alice", "container-create", unique_project("gr"), "--image", images[0])
    assert r.returncode == 6 and "oversized /etc/group" in r.stderr and "lines" in r.stderr, r.stderr
