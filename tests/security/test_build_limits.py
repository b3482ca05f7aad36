"""Builds are contained like containers (issue 15, item 3): every step of a user's build runs with
that user's memory and CPU limits, and all steps together with at most the user's pids limit, so
a fork bomb in a RUN step fails the build with the reason instead of taking the machine."""

from __future__ import annotations

import pwd
import secrets
import subprocess
import threading
import time

import pytest

from tests.integration.harness import USERS, new_daemon, unique_project, write_as

PIDS, MEMORY, CPUS = 200, 256 * 1024**2, 1
FORKS = 5000


@pytest.fixture(scope="module")
def bdaemon(docker_client):
    """A daemon of its own: carol's limits are small, so the test stays fast."""
    d = new_daemon()
    d.start({"users": {USERS["carol"]: {"pids": PIDS, "memory": MEMORY, "cpus": CPUS}}})
    yield d
    d.destroy(docker_client)


def _build(d, projects, dockerfile: str, timeout: float = 180) -> subprocess.CompletedProcess:
    p = unique_project("bld")
    projects.append(("carol", p))
    write_as("carol", f"{pwd.getpwnam(USERS['carol']).pw_dir}/workspace/{p}/Dockerfile", dockerfile)
    return d.run("carol", "image-create", p, timeout=timeout)


def test_a_fork_bomb_in_a_run_step_fails_the_build_and_the_machine_stays_responsive(bdaemon, projects):
    worst, stop = [0.0], threading.Event()

    def probe():  # how long a trivial host command takes while the build runs
        while not stop.is_set():
            t0 = time.monotonic()
            subprocess.run(["true"])
            worst[0] = max(worst[0], time.monotonic() - t0)
            stop.wait(0.1)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        r = _build(bdaemon, projects, "FROM ds01-test/busybox:latest\n"
                   f"RUN echo {secrets.token_hex(4)}; i=0; while [ $i -lt {FORKS} ]; do sleep 60 & i=$((i+1)); done; wait\n")
    finally:
        stop.set()
        t.join()
    assert r.returncode == 11, r.stdout + r.stderr
    assert f"limit of {PIDS} processes" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 60  # failed at the limit, not after the sleeps
    assert worst[0] < 2.0


def test_build_steps_get_the_users_memory_and_cpu_limits(bdaemon, projects):
    r = _build(bdaemon, projects, "FROM ds01-test/busybox:latest\n"
               f"RUN echo {secrets.token_hex(4)} && cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
               "2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(MEMORY) in r.stdout and str(CPUS * 100_000) in r.stdout, r.stdout
