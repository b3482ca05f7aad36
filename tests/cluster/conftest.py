import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed and "cluster" in item.fixturenames:
        rep.sections.append(("cluster diagnostics", item.funcargs["cluster"].diagnostics()))
