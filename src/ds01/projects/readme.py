"""A project's README.md (``readme-create``): what is where, and how to launch it on DS01."""

from __future__ import annotations

import os
from pathlib import Path

from ds01.errors import Conflict
from ds01.names import validate_project
from ds01.projects.scaffold import GITKEEP, Report, _check_kind, detect_kind, layout, write_file_atomic

README = "README.md"


def _layout_block(project: str, kind: str) -> list[str]:
    rows: list[tuple[str, str]] = []
    for e in layout(kind):
        if e.path.endswith(GITKEEP):
            continue
        depth = e.path.rstrip("/").count("/")
        rows.append(("  " * (depth + 1) + e.path.rstrip("/").rpartition("/")[2] + ("/" if e.is_dir else ""), e.description))
    rows.append(("  README.md", "this file"))
    width = max(len(n) for n, _ in rows) + 2
    lines = ["```", f"{project}/"]
    lines += [f"{n:<{width}}{('# ' + d) if d else ''}".rstrip() for n, d in rows]
    lines.append("```")
    return lines


def _commands(p: str, kind: str) -> list[str]:
    script = "scripts/train.py" if kind == "data-science" else "train.py"
    rows = [
        (f"project-launch {p}", "build the image if needed, start the container, open a shell"),
        (f"project-launch {p} --jupyter", "same, with JupyterLab (prints the ssh -L line for your laptop)"),
        (f"container-run {p}", "another shell in the running container"),
        (f"container-run {p} -- python {script}", "run one command in it"),
        (f"container-retire {p}", "done for now: stop + remove it, free the GPUs"),
    ]
    out: list[str] = []
    for c, d in rows:
        out += [f"# {d}", c]
    return out


def render_readme(project: str, kind: str = "data-science", framework: str | None = None, image: str | None = None) -> str:
    """Markdown for a new project (pure). ``framework``/``image`` are mentioned when known."""
    validate_project(project)
    _check_kind(kind)
    p = project
    out: list[str] = [f"# {p}", "", "_One sentence on what this project is about._", ""]
    env = []
    if framework:
        env.append(f"framework **{framework}**")
    if image:
        env.append(f"image `{image}`")
    if env:
        out += [f"Environment: {', '.join(env)}.", ""]

    out += ["## Layout", ""]
    out += _layout_block(p, kind)
    out.append("")
    if kind == "data-science":
        out += [
            "Data, model weights and outputs are kept out of git by `.gitignore` (only the folders",
            "are committed). To version one model file on purpose, `git add -f models/<file>`; git LFS",
            "stores it when it is set up (`git-init` does that if `git-lfs` is installed).",
            "",
        ]

    out += [
        "## Where things live",
        "",
        f"- On the server this folder is `~/workspace/{p}`; inside the container it is `/workspace`.",
        "  Files you save there are yours and stay when the container goes away.",
        "- Containers are temporary. Anything installed by hand inside one (`pip install ...`) is",
        "  lost when it is retired: put packages in `requirements.txt` / the `Dockerfile` instead,",
        f"  or run `container-retire {p} --save-packages` to add them for you.",
        "",
        "## How to run it",
        "",
        "```bash",
        *_commands(p, kind),
        "```",
        "",
        "`container-retire` never touches this folder. Run `ds01 concepts` for the ideas behind this,",
        "and `<command> --help` for every option.",
        "",
    ]
    return "\n".join(out)


def write_readme(
    path: str | os.PathLike[str],
    project: str | None = None,
    kind: str | None = None,
    framework: str | None = None,
    image: str | None = None,
    force: bool = False,
) -> Report:
    """Write ``<path>/README.md`` unless one exists (``force`` replaces it, atomically).

    ``project`` defaults to the folder name, ``kind`` to what :func:`detect_kind` finds there."""
    root = Path(path)
    project = validate_project(project if project is not None else root.name)
    kind = kind or detect_kind(root)
    text = render_readme(project, kind, framework, image)
    target = root / README
    report = Report()
    if target.is_dir():
        raise Conflict(f"{target} is a folder", "rename it and run the command again")
    if target.is_symlink():
        report.kept.append(README)  # never write through a link
    elif target.exists():
        if force and target.read_text(encoding="utf-8", errors="replace") != text:
            write_file_atomic(target, text, replace=True)
            report.overwritten.append(README)
        else:
            report.kept.append(README)
    else:
        root.mkdir(parents=True, exist_ok=True)
        try:
            write_file_atomic(target, text, replace=False)
            report.created.append(README)
        except FileExistsError:
            report.kept.append(README)
    return report
