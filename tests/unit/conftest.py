"""Unit tests are hermetic: no CLI under test may reach a DS01 daemon that happens to run on the
host (a system ds01d from scripts/setup.sh would answer /v1/whoami with its own workspace base).
Tests that need a daemon or a socket set DS01_ROOT / DS01_SOCKET themselves."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_host_daemon(monkeypatch, tmp_path_factory):
    import os

    if "DS01_ROOT" not in os.environ:
        monkeypatch.setenv("DS01_ROOT", str(tmp_path_factory.mktemp("no-daemon-root")))
