"""Where the CLI puts workspaces (the daemon's word, ds01.cli.workspaces) and the one "nothing
changed" decision of project-launch (ds01.projects.stamps.stamp_verdict)."""

from __future__ import annotations

import pytest

from ds01.cli import workspaces
from ds01.client import api
from ds01.errors import DaemonUnavailable, PermissionDenied
from ds01.projects.stamps import stamp_verdict
from ds01.projects.workspace import current_user


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("DS01_SOCKET", str(tmp_path / "d.sock"))
    monkeypatch.setattr(workspaces, "_asked", {})
    calls = []
    return calls


def test_the_daemons_base_wins_over_the_offline_fallback(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("DS01_WORKSPACE_BASE", str(tmp_path / "env"))

    def whoami(c):
        fresh.append(1)
        return {"user": "x", "workspace_base": str(tmp_path) + "/lab/{user}"}

    monkeypatch.setattr(api, "whoami", whoami)
    user = current_user()[0]
    assert workspaces.path("p") == f"{tmp_path}/lab/{user}/p"
    assert workspaces.directory("q").parent == tmp_path / "lab" / user
    assert fresh == [1]  # asked once per process


def test_an_older_daemon_means_the_default(fresh, monkeypatch):
    monkeypatch.setattr(api, "whoami", lambda c: {"user": "x"})
    assert workspaces.template() == "{home}/workspace"


def test_without_a_daemon_the_offline_fallback_applies(fresh, monkeypatch, tmp_path):
    def whoami(c):
        fresh.append(1)
        raise DaemonUnavailable("no daemon")

    monkeypatch.setattr(api, "whoami", whoami)
    monkeypatch.setenv("DS01_WORKSPACE_BASE", str(tmp_path / "env"))
    assert workspaces.path("p") == str(tmp_path / "env" / "p")
    assert workspaces.template() is None and fresh == [1]
    monkeypatch.delenv("DS01_WORKSPACE_BASE")
    assert workspaces.base().name == "workspace"


def test_other_refusals_are_not_hidden(fresh, monkeypatch):
    def whoami(c):
        raise PermissionDenied("uid 5 has no account on this host")

    monkeypatch.setattr(api, "whoami", whoami)
    with pytest.raises(PermissionDenied):
        workspaces.path("p")


WS = "/home/a/workspace/p"
SIG = {"Dockerfile": [10, 1], "requirements.txt": None}


def stamp(**kw):
    return {"hash": "h1", "image_id": "img1", "workspace": WS, "files": SIG, "covers": True, **kw}


def never():
    raise AssertionError("the files were read although size and mtime settle it")


def test_unchanged_size_and_mtime_settle_it_without_reading():
    assert stamp_verdict(stamp(), WS, never, signature=SIG) is None


@pytest.mark.parametrize("st,current,why", [
    (None, ("h1", True), "first launch"),
    (stamp(workspace="/elsewhere"), ("h1", True), "first launch"),
    (stamp(), ("h2", True), "changed"),
    (stamp(covers=False, files={}), ("h1", False), "copies project files"),
])
def test_what_makes_launch_check_the_image(st, current, why):
    got = stamp_verdict(st, WS, lambda: current, signature={"Dockerfile": [11, 2], "requirements.txt": None})
    assert got is not None and why in got


def test_a_changed_signature_falls_back_to_the_hash():
    assert stamp_verdict(stamp(), WS, lambda: ("h1", True), signature={"Dockerfile": [10, 2]}) is None


def test_the_image_id_counts_only_when_the_daemon_was_asked():
    assert stamp_verdict(stamp(), WS, never, signature=SIG) is None
    assert "rebuilt or replaced" in stamp_verdict(stamp(), WS, never, signature=SIG, image={"id": "img2"})
    assert stamp_verdict(stamp(), WS, lambda: ("h1", True), image={"id": "img1"}) is None
