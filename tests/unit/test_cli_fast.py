"""The CLI fast path (ds01.cli.fast): what it accepts, that it agrees with the click commands,
and that it really runs without importing click."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.cli import fast
from ds01.cli.app import _load
from ds01.errors import DaemonUnavailable


@pytest.mark.parametrize("name,args,expected", [
    ("container-create", ["demo"], ("demo", frozenset())),
    ("container-create", ["demo", "--json", "--cpu-only"], ("demo", frozenset({"--json", "--cpu-only"}))),
    ("container-create", ["--json", "demo"], ("demo", frozenset({"--json"}))),
    ("container-remove", ["demo", "--force"], ("demo", frozenset({"--force"}))),
    ("project-launch", ["demo", "--background"], ("demo", frozenset({"--background"}))),
    ("image-update", ["demo", "--rebuild"], ("demo", frozenset({"--rebuild"}))),
    # everything else belongs to click
    ("container-create", [], None),
    ("container-create", ["--help"], None),
    ("container-create", ["-h"], None),
    ("container-create", ["demo", "--gpus", "1"], None),
    ("container-create", ["demo", "--image=x"], None),
    ("container-create", ["a", "b"], None),
    ("container-create", ["demo", "--"], None),
    ("container-start", ["demo", "--force"], None),
    ("container-run", ["demo"], None),
    ("container-list", [], ("", frozenset())),
    ("container-list", ["--all", "--json"], ("", frozenset({"--all", "--json"}))),
    ("container-list", ["demo"], None),
    ("container-list", ["--all-users"], None),
    ("project-init", ["demo", "--yes"], None),
])
def test_parse_table(name, args, expected):
    assert fast.parse(name, args) == expected


@given(st.sampled_from(sorted(fast.FLAGS)), st.lists(st.text(min_size=1, max_size=12), max_size=5))
def test_parse_accepts_only_one_project_and_known_flags(name, args):
    got = fast.parse(name, args)
    positionals = [a for a in args if not a.startswith("-")]
    unknown = [a for a in args if a.startswith("-") and a not in fast.FLAGS[name]]
    wanted = 0 if name in fast.NO_PROJECT else 1
    if got is None:
        assert unknown or len(positionals) != wanted
    else:
        assert not unknown and positionals == [got[0]][:wanted]
        assert got[1] == frozenset(a for a in args if a.startswith("-"))


@pytest.mark.parametrize("name", sorted(fast.FLAGS))
def test_every_fast_flag_is_a_boolean_flag_of_the_click_command(name):
    cmd = _load(name)
    flags = {}
    for p in cmd.params:
        if isinstance(p, click.Option) and p.is_flag:
            for o in p.opts:
                flags[o] = p
            for o in p.secondary_opts:
                flags[o] = p
    for f in fast.FLAGS[name]:
        assert f in flags, f"{name}: the fast path accepts {f}, the click command has no such flag"
    has_project = any(isinstance(p, click.Argument) and p.name == "project" for p in cmd.params)
    assert has_project == (name not in fast.NO_PROJECT)


def _run_entry(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = ("import sys\nsys.argv = [%r, *%r]\nfrom ds01.cli.main import run_command\n"
            "try:\n    run_command(%r)\nfinally:\n"
            "    sys.stderr.write('CLICK:%%s\\n' %% ('click' in sys.modules))\n") % (name, list(args), name)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"DS01_SOCKET": "/nonexistent/ds01.sock", "PATH": "/usr/bin:/bin", **(env or {})})


def test_fast_path_runs_without_click_and_reports_errors_like_click():
    r = _run_entry("container-create", "demo")
    assert r.returncode == DaemonUnavailable.exit_code
    assert "error: " in r.stderr and "hint: " in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("CLICK:False")
    slow = _run_entry("container-create", "demo", env={"DS01_NO_FAST": "1"})
    assert slow.returncode == r.returncode and slow.stderr.strip().endswith("CLICK:True")
    assert slow.stderr.replace("CLICK:True", "") == r.stderr.replace("CLICK:False", "")


def test_help_and_other_options_go_to_click():
    r = _run_entry("container-create", "--help")
    assert r.returncode == 0 and "Example" in r.stdout and r.stderr.strip().endswith("CLICK:True")
    r = _run_entry("container-create", "demo", "--gpus", "x")
    assert r.returncode == 2 and "--gpus" in r.stderr  # click's usage error, not the fast path's


def test_shell_completion_and_no_fast_go_to_click():
    assert _run_entry("container-list", env={"_CONTAINER_LIST_COMPLETE": "bash_source"}).stderr.strip().endswith(
        "CLICK:True")
    assert _run_entry("container-start", "demo", env={"DS01_NO_FAST": "0"}).stderr.strip().endswith("CLICK:False")


def test_umbrella_command_uses_the_fast_path_too(monkeypatch):
    code = ("import sys\nsys.argv = ['ds01', 'container', 'start', 'demo']\nfrom ds01.cli.main import main\n"
            "try:\n    main()\nfinally:\n    sys.stderr.write('CLICK:%s\\n' % ('click' in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"DS01_SOCKET": "/nonexistent/ds01.sock", "PATH": "/usr/bin:/bin"})
    assert r.returncode == DaemonUnavailable.exit_code and r.stderr.strip().endswith("CLICK:False")


@pytest.mark.parametrize("args,expected", [
    (["demo", "--", "python", "train.py", "--epochs", "3"], ("demo", ["python", "train.py", "--epochs", "3"])),
    (["demo", "--", "--weird"], ("demo", ["--weird"])),
    # a shell, options, a command without "--": click's
    (["demo"], None),
    (["demo", "--"], None),
    (["demo", "ls"], None),
    (["--user", "bob", "demo", "--", "true"], None),
    (["demo", "--user", "bob", "--", "true"], None),
    (["--help"], None),
    (["--", "demo", "true"], None),
])
def test_container_run_fast_form(args, expected):
    assert fast.parse_run("container-run", args) == expected
    assert fast.parse_run("container-attach", args) is None


def test_container_run_fast_form_matches_click():
    ctx = _load("container-run").make_context("container-run", ["demo", "--", "a", "--b", "c"])
    assert (ctx.params["project"], list(ctx.params["cmd"]), ctx.params["user"]) == ("demo", ["a", "--b", "c"], None)


def test_container_run_fast_path_imports_no_click_nor_websockets_and_ends_like_click():
    code = ("import sys\nsys.argv = ['container-run', 'demo', '--', 'true']\nfrom ds01.cli.main import run_command\n"
            "try:\n    run_command('container-run')\nfinally:\n"
            "    sys.stderr.write('MODS:%s\\n' % sorted(m for m in ('click', 'websockets', 'pydantic', 'docker',"
            " 'aiohttp', 'rich') if m in sys.modules))\n")
    env = {"DS01_SOCKET": "/nonexistent/ds01.sock", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == DaemonUnavailable.exit_code and r.stderr.strip().endswith("MODS:[]")
    slow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "DS01_NO_FAST": "1"})
    assert slow.returncode == r.returncode and "'click'" in slow.stderr
    assert slow.stderr.split("MODS:")[0] == r.stderr.split("MODS:")[0]
