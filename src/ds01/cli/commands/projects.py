"""L2 project helpers: ``dir-create``, ``git-init``, ``readme-create``.

They only touch the caller's own files, so they run right here in the CLI process as the user:
no root, and no daemon beyond asking it where workspaces are (``ds01.cli.workspaces``; without
one they still work, at the default place). Each one creates ``~/workspace/<project>`` if it is
missing (mode 0o750, see ``ds01.projects.workspace``), is idempotent, and never overwrites an
existing file without --force.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ds01.cli import workspaces
from ds01.cli.options import CTX
from ds01.projects import scaffold
from ds01.projects.workspace import display_path

OK, KEPT = "✓", "·"


def _prefix(path: Path, rels: list[str]) -> list[str]:
    """Display paths, without the .gitkeep files (an implementation detail; --json lists them)."""
    return [display_path(path) + "/" + r for r in rels if not r.endswith(scaffold.GITKEEP)]


def _print_lines(created: list[str], kept: list[str], overwritten: list[str] = (), notes: list[str] = ()) -> None:
    for c in created:
        click.echo(f"{click.style(OK, fg='green')} created {c}")
    for c in overwritten:
        click.echo(f"{click.style(OK, fg='yellow')} replaced {c} (--force)")
    for k in kept:
        click.echo(f"{KEPT} kept {k}")
    for n in notes:
        click.echo(f"{click.style('note:', fg='cyan')} {n}")


def _workspace(project: str) -> tuple[Path, list[str]]:
    path, created = workspaces.ensure(project)
    return path, ([display_path(path) + "/"] if created else [])


def _emit_json(data: dict[str, object]) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.command(context_settings=CTX)
@click.argument("project")
@click.option(
    "--type",
    "kind",
    type=click.Choice(scaffold.KINDS),
    default="data-science",
    show_default=True,
    help="data-science: data/, notebooks/, src/, models/, ...; blank: just a .gitignore.",
)
@click.option("--force", is_flag=True, help="Replace a .gitignore you edited with the standard one.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def dir_create(project: str, kind: str, force: bool, as_json: bool) -> None:
    """Create the folders of a project in ~/workspace/PROJECT.

    Safe to run again: existing folders and files are kept (only missing ones are
    created), and nothing is overwritten unless you pass --force.

    \b
    Examples:
      dir-create thesis                 data-science layout in ~/workspace/thesis
      dir-create scratch --type blank   an empty project with a .gitignore
      dir-create thesis --json          what was created/kept, as JSON
    """
    path, ws_created = _workspace(project)
    rep = scaffold.create_dirs(path, kind, force=force)
    if as_json:
        _emit_json({"project": project, "path": str(path), "type": kind, "workspace_created": bool(ws_created), **rep.to_dict()})
        return
    _print_lines(
        ws_created + _prefix(path, rep.created),
        _prefix(path, rep.kept),
        _prefix(path, rep.overwritten),
    )
    if not rep.changed and not ws_created:
        click.echo(f"nothing to do: {display_path(path)} already has the {kind} layout")
    click.echo(f"next: readme-create {project}, then git-init {project} (so the README is in the first commit)")


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--remote", metavar="URL", help="Add this as 'origin' (e.g. git@github.com:you/thesis.git).")
@click.option("--name", metavar="NAME", help="Commit author name for this repository only.")
@click.option("--email", metavar="EMAIL", help="Commit author e-mail for this repository only.")
@click.option("--no-lfs", is_flag=True, help="Do not set up git LFS even if git-lfs is installed.")
@click.option("--force", is_flag=True, help="Replace an 'origin' that points elsewhere; add missing LFS patterns.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def git_init(project: str, remote: str | None, name: str | None, email: str | None, no_lfs: bool, force: bool, as_json: bool) -> None:
    """Make ~/workspace/PROJECT a git repository with a first commit.

    Creates the repository (branch main), sets your name/e-mail for this
    repository if git does not know them yet, sets up git LFS for model files
    (*.pt, *.ckpt, *.safetensors, ...) when git-lfs is installed, makes a first
    commit if there is none, and adds the remote. Running it again changes nothing.

    \b
    Examples:
      git-init thesis
      git-init thesis --remote git@github.com:ada/thesis.git
      git-init thesis --name 'Ada Lovelace' --email ada@example.org
    """
    from ds01.projects.git import git_init as do_git_init

    path, ws_created = _workspace(project)
    rep = do_git_init(path, remote=remote, name=name, email=email, lfs="off" if no_lfs else "auto", force=force)
    if as_json:
        _emit_json({"project": project, "workspace_created": bool(ws_created), **rep.to_dict()})
        return
    _print_lines(ws_created + rep.created, rep.kept, notes=rep.notes)
    if not rep.changed and not ws_created:
        click.echo(f"nothing to do: {display_path(path)} is already set up")


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--framework", metavar="NAME", help="Mention the framework (e.g. 'pytorch 2.5') in the README.")
@click.option("--image", metavar="IMAGE", help="Mention the project's image in the README.")
@click.option("--force", is_flag=True, help="Replace an existing README.md.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def readme_create(project: str, framework: str | None, image: str | None, force: bool, as_json: bool) -> None:
    """Write ~/workspace/PROJECT/README.md: the layout and how to launch it.

    An existing README.md is kept unless you pass --force.

    \b
    Examples:
      readme-create thesis
      readme-create thesis --framework 'pytorch 2.5' --force
    """
    from ds01.projects.readme import README, write_readme

    path, ws_created = _workspace(project)
    kind = scaffold.detect_kind(path)
    rep = write_readme(path, project, kind, framework=framework, image=image, force=force)
    if as_json:
        _emit_json({"project": project, "path": str(path / README), "type": kind, "workspace_created": bool(ws_created), **rep.to_dict()})
        return
    _print_lines(
        ws_created + _prefix(path, rep.created),
        _prefix(path, rep.kept),
        _prefix(path, rep.overwritten),
    )
    if rep.kept:
        click.echo("your README.md was left as it is (--force replaces it)")
