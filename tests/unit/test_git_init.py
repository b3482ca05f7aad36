"""git-init against the real git, in temporary folders, with HOME pointing at a temporary home."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ds01.errors import Conflict, InvalidInput, NotFound
from ds01.projects.git import FIRST_COMMIT_MESSAGE, LFS_PATTERNS, git_init, validate_remote
from ds01.projects.readme import write_readme
from ds01.projects.scaffold import create_dirs


FAKE_LFS = """#!/bin/sh
# Stand-in for git-lfs: records calls, and 'install --local' sets the filter like the real one.
echo "$@" >> "$FAKE_LFS_LOG"
if [ "$1" = install ]; then
  git config --local filter.lfs.clean "git-lfs clean -- %f"
  git config --local filter.lfs.smudge "git-lfs smudge -- %f"
  git config --local filter.lfs.required true
fi
"""


@pytest.fixture(autouse=True)
def git_home(tmp_path, monkeypatch):
    """A hermetic git: no system or user config, no identity from the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in list(os.environ):
        if var.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) or var in ("GIT_DIR", "GIT_WORK_TREE", "EMAIL", "GIT_CONFIG_GLOBAL"):
            monkeypatch.delenv(var, raising=False)
    # Keep git, but hide any real git-lfs: tests choose with fake_lfs.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(shutil.which("git"), bindir / "git")
    path = f"{bindir}:/usr/bin:/bin"
    if shutil.which("git-lfs", path=path):  # a real one is installed: show git alone
        path = str(bindir)
    monkeypatch.setenv("PATH", path)
    return home


@pytest.fixture
def fake_lfs(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "git-lfs"
    exe.write_text(FAKE_LFS)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "lfs.log"
    monkeypatch.setenv("FAKE_LFS_LOG", str(log))
    return log


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True).stdout.strip()


def tree_state(path: Path) -> tuple[str, str, str]:
    return (git(path, "rev-parse", "HEAD"), git(path, "config", "--local", "--list"), git(path, "status", "--porcelain"))


@pytest.fixture
def project(tmp_path):
    p = tmp_path / "ws" / "thesis"
    create_dirs(p, "data-science")
    write_readme(p)
    return p


def test_first_run_makes_repo_identity_and_commit(project):
    rep = git_init(project)
    assert rep.changed
    assert git(project, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(project, "log", "--format=%s") == FIRST_COMMIT_MESSAGE
    files = git(project, "ls-files").splitlines()
    assert ".gitignore" in files and "README.md" in files and "data/raw/.gitkeep" in files
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    assert git(project, "config", "--local", "user.name") == user
    assert git(project, "config", "--local", "user.email").startswith(user + "@")
    assert any("no git name" in n for n in rep.notes)
    assert rep.lfs == "unavailable" and any("git-lfs" in n for n in rep.notes)
    assert not (project / ".gitattributes").exists()
    assert rep.commit == git(project, "rev-parse", "HEAD")
    assert git(project, "status", "--porcelain") == ""


def test_second_run_changes_nothing(project):
    git_init(project, remote="git@github.com:ada/thesis.git", name="Ada", email="ada@example.org")
    before = tree_state(project)
    rep = git_init(project, remote="git@github.com:ada/thesis.git", name="Ada", email="ada@example.org")
    assert not rep.changed and rep.created == []
    assert tree_state(project) == before
    rep = git_init(project)  # without the options, too
    assert not rep.changed and tree_state(project) == before


def test_global_identity_is_used_not_copied(project, git_home):
    subprocess.run(["git", "config", "--global", "user.name", "Grace"], check=True)
    subprocess.run(["git", "config", "--global", "user.email", "grace@example.org"], check=True)
    rep = git_init(project)
    assert "user.name = Grace" in rep.kept
    assert subprocess.run(["git", "-C", str(project), "config", "--local", "user.name"]).returncode == 1
    assert git(project, "log", "--format=%an <%ae>") == "Grace <grace@example.org>"
    assert not any("no git" in n for n in rep.notes)


def test_given_identity_is_set_locally(project, git_home):
    subprocess.run(["git", "config", "--global", "user.name", "Grace"], check=True)
    git_init(project, name="Ada Lovelace", email="ada@example.org")
    assert git(project, "config", "--local", "user.name") == "Ada Lovelace"
    assert git(project, "log", "--format=%an <%ae>") == "Ada Lovelace <ada@example.org>"
    assert "Ada" not in (git_home / ".gitconfig").read_text()


def test_existing_history_is_left_alone(project):
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(project)], check=True)
    git(project, "config", "user.name", "U")
    git(project, "config", "user.email", "u@x")
    (project / "src" / "a.py").write_text("x = 1\n")
    git(project, "add", "src/a.py")
    git(project, "commit", "-q", "-m", "mine")
    head = git(project, "rev-parse", "HEAD")
    rep = git_init(project)
    assert git(project, "rev-parse", "HEAD") == head
    assert "git repository" in rep.kept
    assert git(project, "symbolic-ref", "--short", "HEAD") == "trunk"


def test_project_inside_another_repo_gets_its_own(tmp_path):
    outer = tmp_path / "home-repo"
    outer.mkdir()
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    inner = outer / "workspace" / "p"
    create_dirs(inner, "blank")
    git_init(inner)
    assert (inner / ".git").is_dir()
    assert Path(git(inner, "rev-parse", "--show-toplevel")).resolve() == inner.resolve()


def test_big_files_stay_out_of_the_first_commit(tmp_path, monkeypatch):
    import ds01.projects.git as g

    monkeypatch.setattr(g, "LARGE_FILE_BYTES", 1000)
    p = tmp_path / "p"
    p.mkdir()
    (p / "small.txt").write_text("hi\n")
    (p / "huge.dat").write_bytes(b"\0" * 5000)
    rep = git_init(p)
    assert git(p, "ls-files").splitlines() == ["small.txt"]
    assert any("huge.dat" in n for n in rep.notes)


def test_empty_folder_gets_an_empty_first_commit(tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    git_init(p)
    assert git(p, "log", "--format=%s") == FIRST_COMMIT_MESSAGE


def test_remote_added_kept_conflict_force(project):
    git_init(project, remote="https://github.com/ada/thesis.git")
    assert git(project, "remote", "get-url", "origin") == "https://github.com/ada/thesis.git"
    with pytest.raises(Conflict) as ei:
        git_init(project, remote="https://gitlab.com/ada/thesis.git")
    assert "--force" in ei.value.hint
    assert git(project, "remote", "get-url", "origin") == "https://github.com/ada/thesis.git"
    rep = git_init(project, remote="https://gitlab.com/ada/thesis.git", force=True)
    assert rep.changed
    assert git(project, "remote", "get-url", "origin") == "https://gitlab.com/ada/thesis.git"


@pytest.mark.parametrize(
    "url",
    ["https://github.com/a/b.git", "http://host/x", "ssh://git@host:2222/a/b.git", "git://host/a",
     "git@github.com:a/b.git", "host:repo", "file:///srv/git/x.git", "/srv/git/x.git"],
)
def test_valid_remotes(url):
    assert validate_remote(url) == url


@pytest.mark.parametrize(
    "url",
    ["", "-uevil", "--upload-pack=touch /tmp/x", "ext::sh -c touch% /tmp/pwned", "fd::3", "https://",
     "https://github.com/", "ftp://host/x", "https://a b/c", "https://host/x\n", "not a url", "http://", "relative/path",
     "file://relative"],
)
def test_invalid_remotes_refused_before_anything_changes(tmp_path, url):
    p = tmp_path / "p"
    p.mkdir()
    with pytest.raises(InvalidInput):
        git_init(p, remote=url)
    assert list(p.iterdir()) == []


@pytest.mark.parametrize("kw", [{"name": "-x"}, {"name": " "}, {"name": "a\nb"}, {"email": "nope"}, {"email": "a@b\n"}, {"lfs": "maybe"}])
def test_invalid_identity_or_mode(tmp_path, kw):
    with pytest.raises(InvalidInput):
        git_init(tmp_path, **kw)
    assert not (tmp_path / ".git").exists()


def test_missing_folder(tmp_path):
    with pytest.raises(NotFound):
        git_init(tmp_path / "nope")


def test_lfs_required_but_missing(project):
    with pytest.raises(NotFound) as ei:
        git_init(project, lfs="on")
    assert "--no-lfs" in ei.value.hint
    assert not (project / ".git").exists()


def test_lfs_off_says_nothing(project, fake_lfs):
    rep = git_init(project, lfs="off")
    assert rep.lfs == "off" and not fake_lfs.exists()
    assert not (project / ".gitattributes").exists()
    assert not any("lfs" in n.lower() for n in rep.notes)


def test_lfs_when_installed(project, fake_lfs):
    rep = git_init(project)
    assert rep.lfs == "on"
    assert fake_lfs.read_text().splitlines() == ["install --local"]
    attrs = (project / ".gitattributes").read_text()
    for pat in LFS_PATTERNS:
        assert f"{pat} filter=lfs diff=lfs merge=lfs -text" in attrs
    assert ".gitattributes" in git(project, "ls-files").splitlines()  # part of the first commit
    before = tree_state(project)
    rep2 = git_init(project)
    assert not rep2.changed and tree_state(project) == before
    assert fake_lfs.read_text().splitlines() == ["install --local"]  # not run again


def test_user_gitattributes_kept_unless_force(project, fake_lfs):
    (project / ".gitattributes").write_text("*.pt filter=lfs diff=lfs merge=lfs -text\n*.txt text\n")
    rep = git_init(project)
    assert (project / ".gitattributes").read_text() == "*.pt filter=lfs diff=lfs merge=lfs -text\n*.txt text\n"
    assert any("--force" in n for n in rep.notes)
    git_init(project, force=True)
    text = (project / ".gitattributes").read_text()
    assert text.startswith("*.pt filter=lfs diff=lfs merge=lfs -text\n*.txt text\n")
    assert "*.safetensors filter=lfs" in text and text.count("*.pt ") == 1
