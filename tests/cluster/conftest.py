import pytest

# the bootstrapped base image (sshd, Python) for the daily-path tests; built once per session
from tests.integration.conftest import base_image, daemon, docker_client  # noqa: F401


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "cluster" in item.fixturenames:
        rep.sections.append(("cluster diagnostics", item.funcargs["cluster"].diagnostics()))
