"""The folder skeleton of a project (``dir-create``): a pure layout plus one careful writer.

Rules the writer keeps, so it can be run again and again:

- idempotent: a second run creates nothing and reports everything as kept;
- non-destructive: an existing file is never overwritten unless ``force``, and even then only the
  files this module owns (``.gitignore``); directories and the user's files are never removed;
- never writes through a symlink: a ``data/raw`` that links to a shared dataset is kept as it is
  and gets no ``.gitkeep`` (writing there would write into someone else's folder).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ds01.errors import Conflict, InvalidInput

Kind = Literal["data-science", "blank"]
KINDS: tuple[str, ...] = ("data-science", "blank")
GITKEEP = ".gitkeep"

# Model files: kept out of git by .gitignore, stored with git LFS when one is added on purpose.
MODEL_PATTERNS: tuple[str, ...] = ("*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.bin", "*.h5", "*.onnx")


@dataclass(frozen=True)
class Entry:
    """One thing in a layout. ``path`` is relative and uses '/'; ``content`` is None for a dir."""

    path: str
    is_dir: bool
    description: str = ""
    content: str | None = None


@dataclass
class Report:
    """What a run did, as relative paths (directories end with '/')."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.overwritten)

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)


_GITIGNORE_HEAD = """\
# Written by ds01 dir-create. Edit freely: ds01 never overwrites this file unless you pass --force.
#
# Git is for code, configs and notebooks. Data, model weights and run outputs stay out of it: they
# are large, they change often, and they stay safe in your workspace anyway (removing a container
# never touches the workspace). To version one model file on purpose: git add -f models/best.pt
# (git-init sets up git LFS for model files when git-lfs is installed, so it will not bloat the repo).
"""

_GITIGNORE_DATA = """
# Data: keep the folders (their .gitkeep and README.md files), not the data.
/data/**
!/data/**/
!/data/**/.gitkeep
!/data/**/README.md

# Run outputs: figures, logs, predictions.
/outputs/*
!/outputs/.gitkeep
"""

_GITIGNORE_COMMON = (
    """
# Model weights and checkpoints, wherever they are.
"""
    + "\n".join(MODEL_PATTERNS)
    + """

# Experiment trackers
wandb/
mlruns/
lightning_logs/

# Caches (Python, Jupyter, CUDA/Triton, tools)
.cache/
__pycache__/
*.py[cod]
.ipynb_checkpoints/
.pytest_cache/
.mypy_cache/
.ruff_cache/
.nv/
.triton/

# Things a container's shell may leave in the workspace
.local/
.ipython/
.jupyter/
.vscode-server/
.bash_history
.python_history

# Environments and secrets
.venv/
venv/
.env

# Wheels and built packages (requirements.txt may name ./wheels/x.whl: the build copies them)
wheels/
*.whl
dist/
*.egg-info/

# DS01 and the OS
.ds01-alerts
.DS_Store
"""
)


def gitignore_text(kind: str) -> str:
    _check_kind(kind)
    return _GITIGNORE_HEAD + (_GITIGNORE_DATA if kind == "data-science" else "") + _GITIGNORE_COMMON


_DS_DIRS: tuple[tuple[str, str], ...] = (
    ("data/", "datasets; not in git (share big data through the lab's data mounts)"),
    ("data/raw/", "the original data, as you received it: treat it as read-only"),
    ("data/processed/", "cleaned data your code produced from raw/"),
    ("data/external/", "third-party data: downloads, reference sets"),
    ("notebooks/", "Jupyter notebooks for exploring and plotting"),
    ("src/", "reusable Python code, imported by notebooks and scripts"),
    ("scripts/", "entry points you run: train.py, evaluate.py, ..."),
    ("models/", "trained models and checkpoints (weights stay out of git)"),
    ("outputs/", "figures, logs, predictions (not in git)"),
    ("configs/", "experiment settings (YAML/JSON), in git"),
    ("tests/", "tests for the code in src/"),
)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"unknown project type {kind!r}", f"use one of: {', '.join(KINDS)}")


def layout(kind: str = "data-science") -> list[Entry]:
    """Everything a project of this kind gets, parents before children (pure, no I/O)."""
    _check_kind(kind)
    entries: list[Entry] = []
    if kind == "data-science":
        dirs = [d for d, _ in _DS_DIRS]
        for d, desc in _DS_DIRS:
            entries.append(Entry(d, True, desc))
            if not any(o != d and o.startswith(d) for o in dirs):  # leaf: keep it in git
                entries.append(Entry(d + GITKEEP, False, "", ""))
    entries.append(Entry(".gitignore", False, "what git leaves out: data, weights, caches", gitignore_text(kind)))
    return entries


def owned_files(kind: str = "data-science") -> set[str]:
    """Files that ``force`` may overwrite (a .gitkeep is empty, so there is never a reason to)."""
    return {e.path for e in layout(kind) if not e.is_dir and not e.path.endswith(GITKEEP)}


def write_file_atomic(target: Path, content: str, *, replace: bool) -> None:
    """Write ``content`` to ``target``: exclusively (O_EXCL) unless ``replace``, atomically if so."""
    if not replace:
        with open(target, "x", encoding="utf-8") as f:
            f.write(content)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def create_dirs(path: str | os.PathLike[str], kind: str = "data-science", force: bool = False) -> Report:
    """Create the skeleton of ``kind`` under ``path`` (created if missing). See the module doc."""
    _check_kind(kind)
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise Conflict(f"{root} exists but is not a directory", "move it away or pick another project")
    root.mkdir(parents=True, exist_ok=True)
    entries = layout(kind)
    owned = owned_files(kind)
    # Check everything first, so a conflict leaves the project untouched.
    for e in entries:
        target = root / e.path
        if e.is_dir and (target.exists() or target.is_symlink()) and not target.is_dir():
            raise Conflict(
                f"{target} is a file, but the {kind} layout needs a folder there",
                f"rename it (mv {target} {target}.bak) and run the command again",
            )
        if not e.is_dir and target.is_dir():
            raise Conflict(f"{target} is a folder, but the layout needs a file there", "rename it and run again")

    report = Report()
    linked: set[str] = set()  # dirs that are symlinks: never write inside them
    fresh_dirs: set[str] = set()
    for e in entries:
        target = root / e.path
        parent = e.path.rstrip("/").rpartition("/")[0]
        if parent and parent + "/" in linked:
            if e.is_dir:
                linked.add(e.path)
            continue
        if e.is_dir:
            if target.is_symlink():
                linked.add(e.path)
                report.kept.append(e.path)
            elif target.is_dir():
                report.kept.append(e.path)
            else:
                target.mkdir()
                fresh_dirs.add(e.path)
                report.created.append(e.path)
            continue
        assert e.content is not None
        if e.path.endswith(GITKEEP):
            d = parent + "/"
            if target.exists() or target.is_symlink():
                report.kept.append(e.path)
            elif d in fresh_dirs or not any(target.parent.iterdir()):
                write_file_atomic(target, e.content, replace=False)
                report.created.append(e.path)
            # a folder that already holds files needs no .gitkeep: nothing to report
            continue
        if target.is_symlink():
            report.kept.append(e.path)  # never write through a link, even with force
        elif target.exists():
            if force and e.path in owned and target.read_text(encoding="utf-8", errors="replace") != e.content:
                write_file_atomic(target, e.content, replace=True)
                report.overwritten.append(e.path)
            else:
                report.kept.append(e.path)
        else:
            try:
                write_file_atomic(target, e.content, replace=False)
                report.created.append(e.path)
            except FileExistsError:
                report.kept.append(e.path)
    return report


def detect_kind(path: str | os.PathLike[str]) -> str:
    """Guess the layout of an existing project: data-science if it has ``data/`` and one of the
    other data-science folders, else blank."""
    root = Path(path)
    others = ("notebooks", "src", "scripts", "models", "outputs", "configs")
    if (root / "data").is_dir() and any((root / o).is_dir() for o in others):
        return "data-science"
    return "blank"
