"""dir-create / git-init / readme-create / concepts through click, with workspaces in a tmp dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import click
import pytest
from click.testing import CliRunner

from ds01.errors import InvalidInput, PermissionDenied
from ds01.cli.commands.concepts import concepts, concepts_text
from ds01.cli.commands.projects import dir_create, git_init, readme_create
from ds01.projects.workspace import DIR_MODE, ensure_workspace, workspace_base, workspace_dir

BAD_NAMES = ["../x", "/etc", "", "a" * 64, "..", "a/b", "Thesis"]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    base = tmp_path / "ws"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DS01_WORKSPACE_BASE", str(base))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in list(os.environ):
        if var.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) or var in ("GIT_DIR", "GIT_WORK_TREE"):
            monkeypatch.delenv(var, raising=False)
    return base


def run(cmd: click.Command, *args: str):
    return CliRunner().invoke(cmd, list(args), catch_exceptions=True)


# --- dir-create ---------------------------------------------------------------------------------


def test_dir_create_creates_workspace_and_layout(ws):
    r = run(dir_create, "thesis")
    assert r.exit_code == 0, r.output
    p = ws / "thesis"
    assert (p / "data" / "raw").is_dir() and (p / ".gitignore").is_file()
    assert "✓ created" in r.output and ".gitkeep" not in r.output
    assert "readme-create thesis" in r.output


def test_dir_create_workspace_mode(ws):
    old = os.umask(0o022)
    try:
        assert run(dir_create, "thesis").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((ws / "thesis").stat().st_mode) == DIR_MODE
    assert stat.S_IMODE(ws.stat().st_mode) == DIR_MODE


def test_dir_create_is_idempotent(ws):
    run(dir_create, "thesis")
    r = run(dir_create, "thesis")
    assert r.exit_code == 0
    assert "✓" not in r.output and "· kept" in r.output and "nothing to do" in r.output


def test_dir_create_json(ws):
    r = run(dir_create, "thesis", "--json")
    d = json.loads(r.output)
    assert d["project"] == "thesis" and d["type"] == "data-science" and d["workspace_created"] is True
    assert "data/raw/.gitkeep" in d["created"] and d["kept"] == [] and d["overwritten"] == []
    d2 = json.loads(run(dir_create, "thesis", "--json").output)
    assert d2["created"] == [] and sorted(d2["kept"]) == sorted(d["created"]) and not d2["workspace_created"]


def test_dir_create_blank(ws):
    r = run(dir_create, "scratch", "--type", "blank")
    assert r.exit_code == 0
    assert sorted(x.name for x in (ws / "scratch").iterdir()) == [".gitignore"]


def test_dir_create_unknown_type_is_a_usage_error(ws):
    r = run(dir_create, "p", "--type", "web")
    assert r.exit_code == 2 and not ws.exists()


def test_edited_gitignore_survives_without_force(ws):
    run(dir_create, "thesis")
    gi = ws / "thesis" / ".gitignore"
    gi.write_text("mine\n")
    assert run(dir_create, "thesis").exit_code == 0
    assert gi.read_text() == "mine\n"
    r = run(dir_create, "thesis", "--force")
    assert r.exit_code == 0 and "replaced" in r.output
    assert gi.read_text() != "mine\n"


@pytest.mark.parametrize("cmd", [dir_create, git_init, readme_create])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_project_names_are_refused(ws, cmd, bad):
    r = run(cmd, bad)
    assert isinstance(r.exception, InvalidInput), r.output
    assert r.exception.hint
    assert not ws.exists()


def test_error_exit_code_and_hint_through_main(ws, capsys, monkeypatch):
    import sys

    from ds01.cli.app import _run

    monkeypatch.setattr(sys, "argv", ["dir-create", "../x"])
    with pytest.raises(SystemExit) as ei:
        _run(dir_create, "dir-create")
    assert ei.value.code == InvalidInput.exit_code
    err = capsys.readouterr().err
    assert "error: invalid project name" in err and "hint:" in err


# --- symlinked workspaces ------------------------------------------------------------------------


def test_symlinked_workspace_leaving_base_is_refused(ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    ws.mkdir()
    os.symlink(outside, ws / "evil")
    for cmd in (dir_create, git_init, readme_create):
        r = run(cmd, "evil")
        assert isinstance(r.exception, PermissionDenied), r.output
        assert "symlink" in r.exception.message and r.exception.hint
    assert list(outside.iterdir()) == []


def test_symlink_to_etc_is_refused(ws):
    ws.mkdir()
    os.symlink("/etc", ws / "etc")
    assert isinstance(run(dir_create, "etc").exception, PermissionDenied)


def test_workspace_in_home_symlinked_out_of_home_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("DS01_WORKSPACE_BASE", raising=False)
    home = tmp_path / "home"
    (home / "workspace").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, home / "workspace" / "p")
    with pytest.raises(PermissionDenied):
        workspace_dir("p", home=home)
    # a symlinked ~/workspace leaving home is refused too
    os.rename(home / "workspace", tmp_path / "ws-real")
    os.symlink(tmp_path / "ws-real", home / "workspace")
    with pytest.raises(PermissionDenied):
        workspace_dir("q", home=home)


def test_symlink_inside_home_is_fine(tmp_path, monkeypatch):
    monkeypatch.delenv("DS01_WORKSPACE_BASE", raising=False)
    home = tmp_path / "home"
    (home / "big" / "p").mkdir(parents=True)
    (home / "workspace").mkdir()
    os.symlink(home / "big" / "p", home / "workspace" / "p")
    assert workspace_dir("p", home=home) == home / "workspace" / "p"
    assert ensure_workspace("p", home=home) == (home / "workspace" / "p", False)


def test_default_base_and_template(tmp_path, monkeypatch):
    monkeypatch.delenv("DS01_WORKSPACE_BASE", raising=False)
    assert workspace_base(tmp_path) == tmp_path / "workspace"
    assert workspace_base(tmp_path, "/srv/ws/{user}").parent == __import__("pathlib").Path("/srv/ws")
    monkeypatch.setenv("DS01_WORKSPACE_BASE", "relative/ws")
    with pytest.raises(InvalidInput):
        workspace_base(tmp_path)
    monkeypatch.setenv("DS01_WORKSPACE_BASE", "/x/{nope}")
    with pytest.raises(InvalidInput):
        workspace_base(tmp_path)


# --- git-init and readme-create -------------------------------------------------------------------


def test_full_flow_and_second_run(ws):
    assert run(dir_create, "thesis").exit_code == 0
    assert run(readme_create, "thesis").exit_code == 0
    r = run(git_init, "thesis", "--name", "Ada", "--email", "ada@example.org", "--remote", "git@github.com:ada/thesis.git")
    assert r.exit_code == 0, r.output
    assert "✓ created first commit" in r.output
    p = ws / "thesis"
    files = subprocess.run(["git", "-C", str(p), "ls-files"], capture_output=True, text=True, check=True).stdout
    assert "README.md" in files and ".gitignore" in files
    r2 = run(git_init, "thesis", "--name", "Ada", "--email", "ada@example.org", "--remote", "git@github.com:ada/thesis.git")
    assert r2.exit_code == 0 and "✓" not in r2.output and "nothing to do" in r2.output
    d = json.loads(run(git_init, "thesis", "--json").output)
    assert d["changed"] is False and d["commit"]


def test_git_init_conflicting_remote_needs_force(ws):
    from ds01.errors import Conflict

    run(git_init, "p", "--remote", "https://github.com/a/p.git")
    r = run(git_init, "p", "--remote", "https://github.com/b/p.git")
    assert isinstance(r.exception, Conflict)
    assert run(git_init, "p", "--remote", "https://github.com/b/p.git", "--force").exit_code == 0


def test_git_init_invalid_remote(ws):
    r = run(git_init, "p", "--remote", "ext::sh -c id")
    assert isinstance(r.exception, InvalidInput)


def test_readme_create_keeps_user_readme(ws):
    run(dir_create, "thesis")
    readme = ws / "thesis" / "README.md"
    readme.write_text("# mine\n")
    r = run(readme_create, "thesis")
    assert r.exit_code == 0 and "· kept" in r.output and "--force" in r.output
    assert readme.read_text() == "# mine\n"
    r = run(readme_create, "thesis", "--force", "--framework", "pytorch 2.5")
    assert r.exit_code == 0 and "replaced" in r.output
    text = readme.read_text()
    assert "pytorch 2.5" in text and "raw/" in text  # kind detected from the folders


def test_readme_create_json_and_missing_workspace(ws):
    d = json.loads(run(readme_create, "fresh", "--json").output)
    assert d["created"] == ["README.md"] and d["workspace_created"] is True and d["type"] == "blank"


# --- help and concepts ---------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [dir_create, git_init, readme_create, concepts])
def test_help_has_examples(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and "Example" in r.output


def test_concepts():
    r = run(concepts)
    assert r.exit_code == 0 and r.output == concepts_text()
    text = concepts_text().lower()
    for word in ("workspace", "image", "container", "temporary", "permanent", "gpu", "fair", "project-launch",
                 "container-retire", "l2", "l3", "l4", "requirements.txt"):
        assert word in text, word
    lines = concepts_text().splitlines()
    assert 40 <= len(lines) <= 80 and max(map(len, lines)) <= 80
