"""A real CNCF distribution registry on 127.0.0.1 for the tests (Debian's ``docker-registry``).

Use: ``from .registry_fixture import local_registry`` in a test module, then take ``local_registry``
as a fixture. The engine treats ``127.0.0.0/8`` registries as insecure (plain HTTP) by default, so
``docker push 127.0.0.1:PORT/...`` works without any daemon.json change.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)

_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRegistry:
    host: str  # "127.0.0.1:PORT"
    root: str
    proc: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, client, local_ref: str, repo: str, tag: str) -> str:
        """Tag the local image ``local_ref`` as ``<host>/<repo>:<tag>`` and push it (docker-py).
        Returns the pushed reference; raises on a push error (the engine reports those in-stream)."""
        ref = f"{self.host}/{repo}"
        client.images.get(local_ref).tag(ref, tag=tag)
        try:
            for line in client.api.push(ref, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise RuntimeError(f"push {ref}:{tag}: {line['error']}")
        finally:
            try:
                client.images.remove(f"{ref}:{tag}", noprune=True)
            except Exception:  # the tag is only the push's vehicle
                pass
        return f"{ref}:{tag}"

    def put_tags(self, repo: str, src_tag: str, tags, workers: int = 16) -> None:
        """Give an already pushed manifest more tags: one manifest PUT per tag (no engine involved;
        2,000 tags take seconds)."""
        req = urllib.request.Request(
            f"{self.url}/v2/{repo}/manifests/{src_tag}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body, ctype = r.read(), r.headers["Content-Type"]

        def put(tag: str) -> None:
            rq = urllib.request.Request(
                f"{self.url}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
                headers={"Content-Type": ctype},
            )
            with urllib.request.urlopen(rq, timeout=10) as r:
                r.read()

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(put, list(tags)))

    def tags(self, repo: str) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/v2/{repo}/tags/list?n=100000", timeout=10) as r:
            return json.loads(r.read()).get("tags") or []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_registry() -> LocalRegistry:
    if not os.access(REGISTRY_BIN, os.X_OK):
        pytest.fail(f"{REGISTRY_BIN} missing: apt-get install docker-registry (scripts/host-prepare.sh does)")
    root = tempfile.mkdtemp(prefix="ds01-registry-")
    port = _free_port()
    cfg = os.path.join(root, "config.yml")
    with open(cfg, "w") as f:
        f.write(_CONFIG.format(root=os.path.join(root, "data"), port=port))
    log = open(os.path.join(root, "registry.log"), "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", cfg], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    reg = LocalRegistry(host=f"127.0.0.1:{port}", root=root, proc=proc)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{reg.url}/v2/", timeout=1) as r:
                if r.status == 200:
                    return reg
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            with open(os.path.join(root, "registry.log"), errors="replace") as f:
                tail = f.read()[-2000:]
            shutil.rmtree(root, ignore_errors=True)
            pytest.fail(f"docker-registry did not answer on {reg.host}:\n{tail}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def local_registry():
    """A running registry: ``.host`` ("127.0.0.1:PORT"), ``.url``, ``.push(client, local_ref, repo,
    tag)``, ``.put_tags(repo, src_tag, tags)``, ``.tags(repo)``. Stopped and deleted at the end."""
    reg = start_registry()
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(reg.root, ignore_errors=True)
