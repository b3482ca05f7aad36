"""Rendering of the wizards' summaries and option checks (no daemon)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ds01.cli.commands import images, wizards
from ds01.cli.setup_checks import Check, limits_line, render_summary, ssh_guidance
from ds01.errors import InvalidInput


def test_summary_marks_and_fixes():
    text = render_summary([
        Check("workspace", True, "~/workspace exists"),
        Check("limits", None, "gpus 1"),
        Check("git", False, "no name/e-mail", "git config --global user.name 'You'"),
    ])
    lines = text.splitlines()
    assert lines[0] == "Summary"
    assert lines[1].startswith("  ✓ workspace  ")
    assert lines[2].startswith("  · limits     ")
    assert lines[3].startswith("  ✗ git        ")
    assert "fix: git config --global user.name 'You'" in lines[4]
    assert lines[-1].startswith("1 thing to fix")


def test_summary_all_set():
    assert render_summary([Check("a", True, "x"), Check("b", None, "y")]).endswith("All set.")


def test_limits_line_from_the_daemons_shape():
    data = {"user": "alice", "group": "students",
            "limits": {"max_gpus": 2.0, "max_gpus_per_container": 1.0, "cpus": 8.0, "memory": 64 * 1024**3,
                       "max_containers": 3, "max_runtime": 86400.0, "idle_timeout": 0, "group": "students"},
            "usage": {"gpus": 0.5, "containers": 1}}
    line = limits_line(data)
    assert line.startswith("GPUs 0.5/2 in use, containers 1/3, 8 CPUs and 64")
    assert "max runtime" in line and "idle" not in line and line.endswith("(group students)")


def test_limits_line_generic_fallback():
    line = limits_line({"max_gpus": 2, "memory": 64 * 1024**3, "groups": ["a"], "x": None})
    assert "max gpus 2" in line and "memory 64" in line and "groups" not in line
    assert limits_line({}) == "none reported"


def test_ssh_guidance_never_makes_a_key_on_the_server():
    g = ssh_guidance("alice", "gpu1.lab.example")
    assert "ssh-keygen -t ed25519" in g and "ssh-copy-id alice@gpu1.lab.example" in g
    assert "HostName gpu1.lab.example" in g and "User alice" in g


def test_presets_match_the_image_commands():
    def choices(cmd):
        return next(p.type.choices for p in cmd.params if p.name == "preset")

    assert list(choices(wizards.project_init)) == list(choices(images.create)) == list(images.PRESET_NAMES)


def test_gpu_request_allows_one_kind_only():
    from ds01.cli.options import gpu_request

    assert gpu_request(None, None, None) == {}
    assert gpu_request(1, None, None) == {"gpus": 1}
    with pytest.raises(InvalidInput):
        gpu_request(1, None, 2)


def test_should_open_defaults(monkeypatch):
    from ds01.cli import verbs

    monkeypatch.setattr(verbs, "is_tty", lambda: True)
    assert verbs.should_open(None, False) and not verbs.should_open(None, True)
    assert not verbs.should_open(False, False) and verbs.should_open(True, True)
    monkeypatch.setattr(verbs, "is_tty", lambda: False)
    assert not verbs.should_open(None, False)


def test_project_launch_without_dockerfile_says_project_init(tmp_path, monkeypatch):
    monkeypatch.setenv("DS01_WORKSPACE_BASE", str(tmp_path))
    r = CliRunner().invoke(wizards.project_launch, ["nothere"], standalone_mode=False)
    err = r.exception
    assert err is not None and err.exit_code == 4
    assert "project-init nothere" in err.hint


def test_every_wizard_has_help_with_examples():
    for cmd in (wizards.user_setup, wizards.project_init, wizards.project_launch):
        r = CliRunner().invoke(cmd, ["--help"])
        assert r.exit_code == 0 and "Example" in r.output
