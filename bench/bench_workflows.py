"""Workflow speed vs the raw parts, measured in one interleaved run on this host. Not run by CI.

* ``project-launch`` on an unchanged project (no rebuild, container reused) vs ``container-deploy``
  alone (bar: ≤ 1.3×).
* a no-op ``image-update --rebuild`` through DS01 vs ``docker build`` of the same Dockerfile,
  fully cached (bar: ≤ 1.2×).

    sudo /opt/ds01/venv/bin/python bench/bench_workflows.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import pwd
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.harness import (  # noqa: E402
    BIN, TEST_IMAGE, USERS, ensure_busybox_image, ensure_users, new_daemon, unique_project, write_as,
)

DOCKERFILE = f"FROM {TEST_IMAGE}\nCOPY requirements.txt /opt/req.txt\nRUN echo built > /opt/built\n"


def timed(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    import docker

    client = docker.from_env()
    ensure_users()
    ensure_busybox_image(client)
    d = new_daemon()
    d.start()
    user = USERS["alice"]
    env = [f"PATH={BIN}:/usr/bin:/bin", f"DS01_ROOT={d.root}", "LANG=C.UTF-8", f"HOME={pwd.getpwnam(user).pw_dir}"]
    as_user = ["runuser", "-u", user, "--", "env", "-i", *env]
    as_root = ["runuser", "-u", "root", "--"]
    p = unique_project("bench")
    ws = Path(pwd.getpwnam(user).pw_dir) / "workspace" / p
    rows = []
    try:
        subprocess.run([*as_user, str(BIN / "project-init"), p, "--yes", "--type", "blank", "--no-git"], check=True,
                       stdout=subprocess.DEVNULL)
        write_as("alice", ws / "Dockerfile", DOCKERFILE)
        write_as("alice", ws / "requirements.txt", "# none\n")
        subprocess.run([*as_user, str(BIN / "project-launch"), p, "--background"], check=True,
                       stdout=subprocess.DEVNULL)
        launch, deploy = [], []
        for _ in range(args.rounds):
            launch.append(timed([*as_user, str(BIN / "project-launch"), p, "--background"]))
            deploy.append(timed([*as_user, str(BIN / "container-deploy"), p, "--background"]))
        rows.append(("project-launch (unchanged) vs container-deploy", statistics.median(launch),
                     statistics.median(deploy), statistics.median(a / b for a, b in zip(launch, deploy)), 1.3))

        tag = f"ds01-bench/raw-{p}:latest"
        subprocess.run([*as_root, "docker", "build", "-q", "-t", tag, str(ws)], check=True, stdout=subprocess.DEVNULL)
        ds, raw = [], []
        for _ in range(args.rounds):
            ds.append(timed([*as_user, str(BIN / "image-update"), p, "--rebuild"]))
            raw.append(timed([*as_root, "docker", "build", "-q", "-t", tag, str(ws)]))
        rows.append(("no-op rebuild vs cached docker build", statistics.median(ds), statistics.median(raw),
                     statistics.median(a / b for a, b in zip(ds, raw)), 1.2))
    finally:
        subprocess.run([*as_user, str(BIN / "container-retire"), p, "--yes"], stdout=subprocess.DEVNULL)
        subprocess.run([*as_user, str(BIN / "image-delete"), p, "--force", "--yes"], stdout=subprocess.DEVNULL)
        subprocess.run(["docker", "rmi", "-f", f"ds01-bench/raw-{p}:latest"], capture_output=True)
        d.stop()
        for c in d.containers(client):
            c.remove(force=True)
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(d.root, ignore_errors=True)
    print(f"{'benchmark':48} {'ds01 (s)':>9} {'raw (s)':>8} {'ratio':>6} {'bar':>5}  verdict")
    for name, a, b, r, bar in rows:
        print(f"{name:48} {a:9.3f} {b:8.3f} {r:6.2f} {bar:5.1f}  {'PASS' if r <= bar else 'FAIL'}")


if __name__ == "__main__":
    main()
