"""dir-create's writer: layout, idempotency, non-destructiveness, --force, symlinks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ds01.errors import Conflict, InvalidInput
from ds01.projects.scaffold import create_dirs, detect_kind, gitignore_text, layout

DS_DIRS = ["data/raw", "data/processed", "data/external", "notebooks", "src", "scripts", "models", "outputs", "configs", "tests"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def test_layout_is_pure_and_ordered():
    entries = layout("data-science")
    paths = [e.path for e in entries]
    for d in DS_DIRS:
        assert d + "/" in paths
        assert d + "/.gitkeep" in paths  # leaves are kept in git
    assert "data/.gitkeep" not in paths  # data/ has sub-folders
    assert ".gitignore" in paths
    for i, e in enumerate(entries):  # parents come before children
        parent = e.path.rstrip("/").rpartition("/")[0]
        if parent:
            assert parent + "/" in paths[:i]
    assert [e.path for e in layout("blank")] == [".gitignore"]
    assert layout("data-science") == entries


def test_unknown_kind_is_invalid(tmp_path):
    with pytest.raises(InvalidInput):
        layout("web")
    with pytest.raises(InvalidInput):
        create_dirs(tmp_path, "web")
    assert list(tmp_path.iterdir()) == []


def test_gitignore_keeps_heavy_things_out():
    text = gitignore_text("data-science")
    for pat in (".cache/", "__pycache__/", ".ipynb_checkpoints/", "*.pt", "*.ckpt", "*.safetensors", "wandb/", "mlruns/", ".ds01-alerts", "/outputs/*", "/data/**"):
        assert pat in text.splitlines(), pat
    blank = gitignore_text("blank")
    assert "*.pt" in blank.splitlines() and "/data/**" not in blank


def test_create_then_idempotent(tmp_path):
    root = tmp_path / "p"
    rep = create_dirs(root, "data-science")
    assert rep.changed and not rep.kept
    for d in DS_DIRS:
        assert (root / d).is_dir()
        assert (root / d / ".gitkeep").is_file()
    assert (root / ".gitignore").read_text() == gitignore_text("data-science")
    before = snapshot(root)
    rep2 = create_dirs(root, "data-science")
    assert not rep2.changed and rep2.created == [] and rep2.overwritten == []
    assert sorted(rep2.kept) == sorted(rep.created)
    assert snapshot(root) == before


def test_user_edits_survive_without_force(tmp_path):
    create_dirs(tmp_path, "data-science")
    gi = tmp_path / ".gitignore"
    gi.write_text("# mine\n*.csv\n")
    (tmp_path / "src" / "model.py").write_text("print(1)\n")
    rep = create_dirs(tmp_path, "data-science")
    assert gi.read_text() == "# mine\n*.csv\n"
    assert ".gitignore" in rep.kept and not rep.changed
    assert (tmp_path / "src" / "model.py").read_text() == "print(1)\n"


def test_force_replaces_only_owned_files(tmp_path):
    create_dirs(tmp_path, "data-science")
    (tmp_path / ".gitignore").write_text("mine\n")
    (tmp_path / "notebooks" / "a.ipynb").write_text("{}")
    (tmp_path / "notebooks" / ".gitkeep").write_text("user text")
    rep = create_dirs(tmp_path, "data-science", force=True)
    assert rep.overwritten == [".gitignore"]
    assert (tmp_path / ".gitignore").read_text() == gitignore_text("data-science")
    assert (tmp_path / "notebooks" / "a.ipynb").read_text() == "{}"
    assert (tmp_path / "notebooks" / ".gitkeep").read_text() == "user text"
    # force on an already-standard tree changes nothing
    assert not create_dirs(tmp_path, "data-science", force=True).changed


def test_existing_folder_with_files_gets_no_gitkeep(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "eda.ipynb").write_text("{}")
    rep = create_dirs(tmp_path, "data-science")
    assert not (tmp_path / "notebooks" / ".gitkeep").exists()
    assert "notebooks/" in rep.kept
    assert (tmp_path / "scripts" / ".gitkeep").exists()


def test_file_where_a_folder_belongs_is_a_conflict_and_nothing_changes(tmp_path):
    (tmp_path / "models").write_text("not a folder")
    with pytest.raises(Conflict) as ei:
        create_dirs(tmp_path, "data-science", force=True)
    assert ei.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_root_that_is_a_file_is_a_conflict(tmp_path):
    f = tmp_path / "p"
    f.write_text("x")
    with pytest.raises(Conflict):
        create_dirs(f, "blank")


def test_symlinked_data_folder_is_kept_and_not_written_into(tmp_path):
    shared = tmp_path / "shared-datasets"
    shared.mkdir()
    root = tmp_path / "p"
    root.mkdir()
    (root / "data").mkdir()
    os.symlink(shared, root / "data" / "raw")
    rep = create_dirs(root, "data-science")
    assert list(shared.iterdir()) == []  # no .gitkeep written into the shared folder
    assert "data/raw/" in rep.kept
    assert (root / "data" / "processed" / ".gitkeep").exists()


def test_symlinked_gitignore_is_never_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("theirs\n")
    root = tmp_path / "p"
    root.mkdir()
    os.symlink(target, root / ".gitignore")
    rep = create_dirs(root, "blank", force=True)
    assert target.read_text() == "theirs\n" and ".gitignore" in rep.kept


def test_blank_layout(tmp_path):
    rep = create_dirs(tmp_path, "blank")
    assert rep.created == [".gitignore"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gitignore"]


def test_detect_kind(tmp_path):
    assert detect_kind(tmp_path) == "blank"
    create_dirs(tmp_path, "data-science")
    assert detect_kind(tmp_path) == "data-science"


def test_report_to_dict(tmp_path):
    d = create_dirs(tmp_path, "blank").to_dict()
    assert d == {"created": [".gitignore"], "kept": [], "overwritten": []}


def test_gitignore_semantics_with_real_git(tmp_path):
    create_dirs(tmp_path, "data-science")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    files = {
        "data/raw/big.csv": True,
        "data/processed/x.parquet": True,
        "data/raw/.gitkeep": False,
        "data/README.md": False,
        "data/raw/README.md": False,
        "outputs/fig.png": True,
        "outputs/.gitkeep": False,
        "models/best.pt": True,
        "models/model.safetensors": True,
        "models/config.json": False,
        "src/__pycache__/m.cpython-311.pyc": True,
        "notebooks/.ipynb_checkpoints/a.ipynb": True,
        "notebooks/a.ipynb": False,
        "wandb/run-1/log": True,
        ".ds01-alerts": True,
        "configs/train.yaml": False,
    }
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    for f, ignored in files.items():
        rc = subprocess.run(["git", "check-ignore", "-q", "--no-index", f], cwd=tmp_path, env=env).returncode
        assert (rc == 0) == ignored, f
