"""readme-create: rendering and the careful writer."""

from __future__ import annotations

import os

import pytest

from ds01.errors import InvalidInput
from ds01.projects.readme import render_readme, write_readme
from ds01.projects.scaffold import create_dirs


def test_render_mentions_layout_and_launch_commands():
    text = render_readme("thesis", "data-science", framework="pytorch 2.5", image="ds01/ada/thesis")
    assert text.startswith("# thesis\n")
    for needle in ("project-launch thesis", "container-run thesis", "container-retire thesis",
                   "~/workspace/thesis", "/workspace", "data/", "raw/", "notebooks/", "models/",
                   "pytorch 2.5", "ds01/ada/thesis", "ds01 concepts"):
        assert needle in text, needle
    assert render_readme("thesis") == render_readme("thesis")  # deterministic


def test_render_blank_has_no_data_layout():
    text = render_readme("scratch", "blank")
    assert "raw/" not in text and ".gitignore" in text and "project-launch scratch" in text


@pytest.mark.parametrize("bad", ["../x", "/etc", "", "a" * 64, "Thesis"])
def test_render_refuses_bad_project_names(bad):
    with pytest.raises(InvalidInput):
        render_readme(bad)


def test_render_refuses_unknown_kind():
    with pytest.raises(InvalidInput):
        render_readme("p", "web")


def test_write_detects_kind_and_is_idempotent(tmp_path):
    root = tmp_path / "thesis"
    create_dirs(root, "data-science")
    rep = write_readme(root)
    assert rep.created == ["README.md"]
    text = (root / "README.md").read_text()
    assert "raw/" in text and "# thesis" in text
    rep2 = write_readme(root)
    assert rep2.kept == ["README.md"] and not rep2.changed
    assert (root / "README.md").read_text() == text


def test_user_readme_survives_without_force_and_force_replaces(tmp_path):
    root = tmp_path / "thesis"
    root.mkdir()
    (root / "README.md").write_text("# My thesis\nhand written\n")
    rep = write_readme(root, "thesis")
    assert rep.kept == ["README.md"]
    assert (root / "README.md").read_text() == "# My thesis\nhand written\n"
    rep = write_readme(root, "thesis", force=True)
    assert rep.overwritten == ["README.md"]
    assert (root / "README.md").read_text() == render_readme("thesis", "blank")
    assert not write_readme(root, "thesis", force=True).changed  # already the standard text


def test_readme_symlink_is_not_written_through(tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("theirs")
    root = tmp_path / "p"
    root.mkdir()
    os.symlink(outside, root / "README.md")
    assert write_readme(root, force=True).kept == ["README.md"]
    assert outside.read_text() == "theirs"


def test_write_refuses_a_folder_named_like_a_bad_project(tmp_path):
    root = tmp_path / "Bad Name"
    root.mkdir()
    with pytest.raises(InvalidInput):
        write_readme(root)
    assert list(root.iterdir()) == []
