"""L4 wizards: ``user-setup``, ``project-init``, ``project-launch``.

Each is interactive on a terminal (arrow-key prompts with the defaults shown) and fully drivable
by flags; ``--yes`` never asks. They only combine the building blocks: the project helpers
(``ds01.projects``), the image commands' helpers (``ds01.cli.commands.images``), the L3 deploy
(``ds01.cli.commands.workflows``), the checks of ``ds01.cli.setup_checks`` and the launch steps
of ``ds01.cli.launching``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ds01.cli.lazy import Client
from ds01.cli.options import CTX, PRESET_NAMES, explain_opt, gpu_options, json_opt, open_option
from ds01.cli.output import ok, print_json
from ds01.cli.prompts import ask
from ds01.cli.verbs import is_tty
from ds01.client import api


def show_explain() -> None:
    from ds01.cli.commands.concepts import concepts_text

    click.echo(concepts_text())


KINDS = ("data-science", "blank")

REQUIREMENTS_TEMPLATE = """\
# Python packages for this project, one per line (pip's requirements format), e.g.
#   pandas
#   scikit-learn==1.5.2
# They are installed into the project's image: after editing, 'project-launch {project}'
# rebuilds the image (only when this file or the Dockerfile changed).
"""


# =========================================================================== user-setup


@click.command(context_settings=CTX)
@click.option("--yes", "-y", is_flag=True, help="never ask; report what is missing instead")
@click.option("--git-name", metavar="NAME", help="set your git name (git config --global user.name)")
@click.option("--git-email", metavar="EMAIL", help="set your git e-mail (git config --global user.email)")
@explain_opt
def user_setup(yes: bool, git_name: str | None, git_email: str | None, explain: bool) -> None:
    """Check your account once and fix what is missing, with a ✓/✗ summary.

    Checks: your ~/workspace folder (created if missing), that the DS01 daemon answers,
    your limits, your git name and e-mail, and an SSH key for VS Code Remote-SSH (you make
    the key on your laptop; this prints the steps). Safe to run again any time.

    \b
    Examples:
      user-setup
      user-setup --yes --git-name 'Ada Lovelace' --git-email ada@example.org
    """
    from ds01.cli.setup_checks import (check_daemon, check_git, check_limits, check_ssh, check_vscode, check_workspace,
                                       host_name, render_summary, ssh_guidance)
    from ds01.projects.workspace import current_user

    if explain:
        show_explain()
    interactive = is_tty() and not yes
    user, home = current_user()
    daemon, me = check_daemon()  # first: it says where the workspaces are
    checks = [check_workspace(me, interactive, yes), daemon]
    if daemon.ok:
        checks.append(check_limits())
    checks.append(check_git(git_name, git_email, interactive))
    ssh = check_ssh(Path(home))
    if not ssh.ok or explain:
        click.echo(ssh_guidance(user, host_name()))
        click.echo()
    checks.append(ssh)
    checks.append(check_vscode(bool(ssh.ok)))
    click.echo(_colour(render_summary(checks)))
    if interactive and daemon.ok:
        _offer_project_init()


def _colour(text: str) -> str:
    return (text.replace("  ✓ ", "  " + click.style("✓", fg="green") + " ")
                .replace("  ✗ ", "  " + click.style("✗", fg="red") + " "))


def _offer_project_init() -> None:
    import questionary

    from ds01.names import validate_project

    if not ask(questionary.confirm("Create a project now (project-init)?", default=False)):
        click.echo("Later: project-init <project>   ('ds01 concepts' explains the ideas)")
        return

    def valid(s: str) -> bool | str:
        try:
            validate_project(s)
            return True
        except Exception as e:  # InvalidInput
            return getattr(e, "message", str(e))

    name = ask(questionary.text("Project name:", default="thesis", validate=valid))
    click.get_current_context().invoke(project_init, project=name)


# =========================================================================== project-init


def ask_init(framework: str | None, preset: str | None, kind: str | None,
             image_questions: bool = True) -> tuple[str | None, str | None, str, dict | None]:
    """The interactive part of project-init: only what the flags did not say. The framework
    picker (``ds01.cli.picker``) also answers the base it chose (None: ask the daemon)."""
    import questionary

    base = None
    if framework is None and image_questions:
        from ds01.cli.picker import pick

        framework, base = pick(api.images_catalog(Client()))
    if preset is None and image_questions:
        pc = [questionary.Choice("none", value="")] + [questionary.Choice(p, value=p) for p in PRESET_NAMES]
        preset = ask(questionary.select("Package preset:", choices=pc)) or None
    if kind is None:
        kind = ask(questionary.select("Project layout:", choices=list(KINDS), default="data-science"))
    return framework, preset, kind, base


def write_requirements(ws: Path, project: str, src: str | None) -> str:
    """``requirements.txt``: a copy of ``src``, else a commented empty one; an existing file is
    kept. Returns what happened (for the summary)."""
    from ds01.cli.commands.images import copy_requirements

    dst = ws / "requirements.txt"
    if src:
        before = dst.read_bytes() if dst.is_file() else None
        copy_requirements(src, ws, force=False)
        return "kept" if before == dst.read_bytes() else "copied from " + src
    if dst.exists() or dst.is_symlink():
        return "kept"
    from ds01.projects.scaffold import write_file_atomic

    write_file_atomic(dst, REQUIREMENTS_TEMPLATE.format(project=project), replace=False)
    return "created (empty: add your packages)"


def write_dockerfile(ws: Path, project: str, base: dict | None, framework: str | None, packages: list[str],
                     preset: str | None) -> str:
    """The project's Dockerfile via the image generator (image-create --no-build); an existing
    one is the user's and is kept."""
    from ds01.cli.commands.images import render, requirement_inputs, write_text

    df = ws / "Dockerfile"
    if base is None:
        return "kept (yours; change packages with image-update)"
    inputs = requirement_inputs(ws, "requirements.txt") if (ws / "requirements.txt").is_file() else []
    write_text(df, render(project, base, framework, packages, [], "requirements.txt", preset, inputs))
    extra = " + " + " ".join(base["pip"]) if base.get("pip") else ""
    return f"written (base {base['image']}{extra})"


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--framework", "-f", metavar="F[==VER]", help="pytorch, tensorflow, jax or python (default: CPU base)")
@click.option("--preset", type=click.Choice(PRESET_NAMES), help="a package set for a kind of work")
@click.option("--requirements", "-r", metavar="FILE", help="a requirements file, copied to the project")
@click.option("--packages", "-p", multiple=True, metavar="PKG", help="pip packages for the image (repeat, or 'a b,c')")
@click.option("--type", "kind", type=click.Choice(KINDS), help="folder layout (default: data-science)")
@click.option("--no-git", is_flag=True, help="do not make it a git repository")
@click.option("--yes", "-y", is_flag=True, help="never ask: use the flags and the defaults")
@json_opt
@explain_opt
def project_init(project: str, framework: str | None, preset: str | None, requirements: str | None,
                 packages: tuple[str, ...], kind: str | None, no_git: bool, yes: bool, as_json: bool,
                 explain: bool) -> None:
    """Set up a new project in ~/workspace/PROJECT, ready for project-launch.

    Makes the folders (dir-create), requirements.txt, a Dockerfile for your image
    (image-create --no-build), a README (readme-create) and a git repository with a first
    commit (git-init). Existing files are kept, so running it again is safe.

    \b
    Examples:
      project-init thesis                       asks a few questions on a terminal
      project-init thesis --yes                 CPU base image, data-science layout
      project-init vision --framework pytorch --preset cv --packages timm --yes
    """
    from ds01.cli import workspaces
    from ds01.cli.commands.images import select_base, split_words
    from ds01.errors import InvalidInput
    from ds01.names import image_name, validate_project
    from ds01.projects import scaffold
    from ds01.projects.readme import write_readme
    from ds01.projects.workspace import current_user, display_path

    if explain:
        show_explain()
    validate_project(project)
    if requirements and not os.access(Path(requirements).expanduser(), os.R_OK):
        raise InvalidInput(f"cannot read the requirements file {requirements}", "give a path to a file you can read")
    ws_path = workspaces.directory(project)
    has_df = (ws_path / "Dockerfile").exists() or (ws_path / "Dockerfile").is_symlink()
    picked = None
    if is_tty() and not yes and not as_json:
        # An existing Dockerfile is kept, so there is no framework or preset to ask about.
        framework, preset, kind, picked = ask_init(framework, preset, kind, image_questions=not has_df)
    kind = kind or "data-science"
    pip = split_words(packages)
    base = None if has_df else picked or select_base(framework)  # asks the daemon: before any file changes
    if is_tty() and not yes and not as_json:
        import questionary

        what = f"{display_path(ws_path)}: {kind} layout, image from {base['image'] if base else 'your Dockerfile'}"
        if not ask(questionary.confirm(f"Create {what}?", default=True)):
            raise click.exceptions.Abort()

    ws, created = workspaces.ensure(project)
    steps: dict[str, Any] = {"workspace": "created" if created else "kept"}
    rep = scaffold.create_dirs(ws, kind)
    steps["folders"] = f"{len(rep.created)} created, {len(rep.kept)} kept"
    steps["requirements.txt"] = write_requirements(ws, project, requirements)
    steps["Dockerfile"] = write_dockerfile(ws, project, base, framework, pip, preset)
    label = f"{base['framework']} {base['framework_version']}" if base and framework else None
    user = current_user()[0]
    r = write_readme(ws, project, kind, framework=label, image=f"{image_name(user, project)}:latest")
    steps["README.md"] = "written" if r.created else "kept"
    notes: list[str] = []
    if base and base.get("fit") == "cpu-only-here":
        notes.append(f"{base['image']} is a CUDA image and this host has no NVIDIA driver: it runs here on the CPU only")
    if base and base.get("local") and not base.get("present"):
        notes.append(f"the base image {base['image']} is not on this server yet; an admin creates it with "
                     "'ds01 admin base-image bootstrap' (project-launch needs it)")
    if no_git:
        steps["git"] = "skipped (--no-git)"
    else:
        steps["git"], git_notes = _git_step(ws)
        notes += git_notes
    if as_json:
        return print_json({"project": project, "path": str(ws), "type": kind, "steps": steps, "notes": notes,
                           "next": f"project-launch {project}"})
    for k, v in steps.items():
        ok(f"{k}: {v}")
    for n in notes:
        click.echo(click.style("note: ", fg="cyan") + n)
    click.echo(f"\nYour project is in {display_path(ws)} (it is /workspace inside the container).")
    click.echo(f"Next: project-launch {project}")


def _git_step(ws: Path) -> tuple[str, list[str]]:
    from ds01.projects.git import git_init

    g = git_init(ws)
    if not g.created:
        return "kept (already a repository)", g.notes
    return "repository with a first commit" + (f" ({g.commit[:10]})" if g.commit else ""), g.notes


# =========================================================================== project-launch


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--rebuild", is_flag=True, help="let the daemon check every file of the image (it builds what changed)")
@click.option("--no-cache", is_flag=True, help="rebuild every step of the image (implies --rebuild)")
@gpu_options
@open_option
@click.option("--jupyter", is_flag=True, help="start JupyterLab in it (inside the container only) and print "
              "the URL and the ssh -L line (through container-ssh)")
@click.option("--publish-local", is_flag=True, help="with --jupyter: also publish its port on this server's "
              "127.0.0.1 (the old way; every local user can then reach it, the token is the only protection)")
@click.option("--yes", "-y", is_flag=True, help="never ask (e.g. replace an outdated container)")
@json_opt
@explain_opt
def project_launch(project: str, rebuild: bool, no_cache: bool, gpus: int | None, gpu_profile: str | None,
                   mig: int | None, queue: bool, open_: bool | None, jupyter: bool, publish_local: bool, yes: bool,
                   as_json: bool, explain: bool) -> int | None:
    """Build PROJECT's image if needed, start its container and open a shell in it.

    The image is rebuilt only when the Dockerfile or requirements.txt changed since the last
    build (or with --rebuild). A running container of the project is reused.

    \b
    Examples:
      project-launch thesis
      project-launch thesis --gpus 1 --background
      project-launch thesis --jupyter            JupyterLab, reachable through ssh -L thesis.ds01
    """
    from ds01.cli import workspaces
    from ds01.cli.commands.workflows import open_shell
    from ds01.cli.launching import JUPYTER_PORT, ensure_image, replace_outdated, start_jupyter
    from ds01.cli.options import gpu_request
    from ds01.cli.verbs import deploy, launch_unchanged, next_steps, report_deploy, should_open
    from ds01.errors import InvalidInput, NotFound
    from ds01.projects.workspace import display_path

    if explain:
        show_explain()
    gpu = gpu_request(gpus, gpu_profile, mig)
    ws = workspaces.directory(project)
    if not (ws / "Dockerfile").is_file():
        where = display_path(ws / "Dockerfile")
        raise NotFound(f"{where} does not exist, so there is no image to launch",
                       f"set the project up first: project-init {project}")
    if publish_local and not jupyter:
        raise InvalidInput("--publish-local only goes with --jupyter",
                           f"project-launch {project} --jupyter --publish-local")
    ports = [JUPYTER_PORT] if jupyter and publish_local else None
    out = None
    if not (rebuild or no_cache):
        out = launch_unchanged(project, str(ws), gpu=gpu, queue=queue, ports=ports, as_json=as_json)
    if out is None:
        image, outdated = ensure_image(project, ws, rebuild, no_cache, as_json)
        if outdated:
            replace_outdated(project, yes, as_json)
        out = deploy(project, image=image, gpu=gpu, queue=queue, ports=ports)
    if not as_json:
        report_deploy(project, out)
    if out.get("queued"):
        return print_json(out) if as_json else None
    if jupyter:
        out["jupyter"] = start_jupyter(project, out, as_json, publish_local)
    if as_json:
        print_json(out)
    if should_open(open_, as_json or jupyter):
        return open_shell(project)
    if not as_json:
        next_steps(project)
    return None

