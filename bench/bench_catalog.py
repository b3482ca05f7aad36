"""Catalog refresh of a repository with 2,000 tags against a real local registry (issue 17).

Run (root, Debian's docker-registry and a Docker Engine with ds01-test/busybox:latest, e.g. after
the integration tests): PYTHONPATH=src:. python bench/bench_catalog.py [tags]
The bar: the refresh (list all pages through the v2 API, parse, diff, write the overlay) <= 10 s.
Tags are 2,000 manifest PUTs of one pushed image (no layers copied). Also printed: the first
catalog lookup after it (the overlay's entries validated once) and a later one (cached).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import docker

from ds01.images import catalog, catalog_refresh as cr
from ds01.services.catalog_refresh import refresh
from tests.integration.registry_fixture import start_registry

BAR_S = 10.0


class _Ctx:
    def emit(self, *a, **k) -> None:
        pass


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    reg = start_registry()
    tmp = tempfile.mkdtemp(prefix="ds01-bench-catalog-")
    try:
        client = docker.from_env()
        reg.push(client, "ds01-test/busybox:latest", "pytorch/pytorch", "seed")
        tags = [f"9.{i // 100}.{i % 100}-cuda12.{i % 10}-cudnn9-{'runtime' if i % 2 else 'devel'}" for i in range(n)]
        t = time.perf_counter()
        reg.put_tags("pytorch/pytorch", "seed", tags)
        print(f"set-up: {n} tags pushed (manifest PUTs) in {time.perf_counter() - t:.1f} s")
        cr.set_overlay_path(os.path.join(tmp, cr.OVERLAY_NAME))
        t = time.perf_counter()
        out = refresh(_Ctx(), None, ["pytorch"], reg.url, False)
        took = time.perf_counter() - t
        assert out["tags"]["pytorch"] == n + 1, out["tags"]
        added = len(out["diff"]["added"])
        t = time.perf_counter()
        size = len(catalog.load_catalog())
        first = time.perf_counter() - t
        t = time.perf_counter()
        catalog.load_catalog()
        later = time.perf_counter() - t
        print(f"refresh: {n + 1} tags listed, {added} entries added, overlay written in {took:.2f} s "
              f"(bar {BAR_S:.0f} s: {'ok' if took <= BAR_S else 'MISSED'})")
        print(f"catalog after it: {size} entries; first lookup {first * 1000:.0f} ms, later {later * 1000:.0f} ms")
        if took > BAR_S:
            sys.exit(1)
    finally:
        cr.set_overlay_path(None)
        reg.stop()
        shutil.rmtree(reg.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
