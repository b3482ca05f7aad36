from __future__ import annotations

import os
import pwd
import shutil

import docker
import pytest

from .harness import USERS, Daemon, ensure_busybox_image, ensure_users, new_daemon, sweep_stale_networks


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (they create users and run ds01d); run them via .ci/run")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # no silent skip: CI must have an engine
        pytest.fail(f"no Docker Engine reachable ({e}); .ci/run starts one")
    ensure_users()
    ensure_busybox_image(client)
    sweep_stale_networks(client)
    return client


@pytest.fixture(scope="session")
def daemon(docker_client) -> Daemon:
    d = new_daemon()
    d.start()
    yield d
    d.destroy(docker_client)


@pytest.fixture(scope="session")
def base_image(daemon, docker_client) -> str:
    """The bootstrapped offline base (``ds01 admin base-image bootstrap``): built once (minutes)
    if missing, reused when already there."""
    import time

    t0 = time.time()
    p = daemon.run(None, "ds01", "admin", "base-image", "bootstrap", timeout=1200)
    assert p.returncode == 0, f"bootstrap failed\n{p.stdout[-3000:]}\n{p.stderr}"
    print(f"base image ready in {time.time() - t0:.0f} s")
    return "ds01/base:latest"


@pytest.fixture
def projects(docker_client, daemon):
    """Collects project names a test used; removes their workspaces afterwards."""
    used: list[tuple[str, str]] = []
    yield used
    for user, project in used:
        home = pwd.getpwnam(USERS[user]).pw_dir
        shutil.rmtree(os.path.join(home, "workspace", project), ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "daemon" in item.fixturenames:
        d: Daemon = item.funcargs["daemon"]
        client = item.funcargs.get("docker_client")
        text = [f"--- ds01d log tail ---\n{d.log_tail()}"]
        if client is not None:
            for c in d.containers(client):
                try:
                    logs = c.logs(tail=20).decode(errors="replace")
                except Exception as e:
                    logs = f"(no logs: {e})"
                text.append(f"--- container {c.name} ({c.status}) ---\n{logs}")
        rep.sections.append(("ds01 diagnostics", "\n".join(text)))
