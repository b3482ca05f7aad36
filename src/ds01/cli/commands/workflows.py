"""L3 orchestrators: ``container-deploy`` (create + start) and ``container-retire`` (stop + remove).

Both are one daemon call each (``api.container_deploy``, ``api.container_retire``):
the daemon does the steps in order and rolls a half-done deploy back, so a failed start never
leaves a container holding GPUs. The CLI adds what only a terminal can: opening a shell after a
deploy, and ``--save-packages`` before a retire.
"""

from __future__ import annotations

from typing import Any

import click

from ds01.cli import options, verbs
from ds01.cli.lazy import Client
from ds01.cli.options import CTX, gpu_options, gpu_request, json_opt, open_option
from ds01.cli.output import info, ok, print_json
from ds01.cli.verbs import deploy, is_tty, report_deploy, should_open
from ds01.client import api


def open_shell(project: str) -> int:
    """Open an interactive shell in the running container; returns the shell's exit code."""
    from ds01.client.stream import run_exec

    click.echo(click.style("→ ", fg="cyan") + f"opening a shell in {project} (exit or Ctrl-D leaves; "
               f"the container keeps running: 'container-retire {project}' when done)")
    return run_exec(project, None, start=False)


# --------------------------------------------------------------------------- container-deploy


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--image", metavar="IMG", help="image to use (default: your project's image, else the lab's base)")
@click.option("--cpu-only", is_flag=True, help="no GPU (the default when no GPU option is given)")
@gpu_options
@options.user_opt("container")
@open_option
@json_opt
def container_deploy(project: str, image: str | None, cpu_only: bool, gpus: int | None, gpu_profile: str | None,
                     mig: int | None, queue: bool, user: str | None, open_: bool | None,
                     as_json: bool) -> int | None:
    """Create and start the container of PROJECT, then open a shell in it.

    If PROJECT's container already runs it is reused; a stopped one is started. If the start
    fails, the half-made container is removed again, so nothing is left holding GPUs.

    \b
    Examples:
      container-deploy thesis                      CPU only, shell opens on a terminal
      container-deploy thesis --gpus 1 --background
      container-deploy thesis --mig 1 --queue      wait for a GPU slice if none is free
    """
    if image and not as_json:
        from ds01.cli.verbs import pull_first

        pull_first(image)  # a missing --image is pulled with progress shown, not silently
    out = deploy(project, image=image, gpu=gpu_request(gpus, gpu_profile, mig), queue=queue, cpu_only=cpu_only,
                 user=user)
    if not out.get("queued") and should_open(open_ and not user, as_json or bool(user)):
        if as_json:
            print_json(out)
        else:
            report_deploy(project, out)
        return open_shell(project)
    verbs.finish_background(project, out, as_json)
    return None


# --------------------------------------------------------------------------- container-retire

# Every installed distribution with the time its metadata folder was written. Files from the
# image keep the image's times; anything pip installs inside the container is newer than it.
PROBE = r"""
import json, os
from importlib import metadata
seen = {}
for d in metadata.distributions():
    try:
        name = d.metadata["Name"]
    except Exception:
        continue
    if not name:
        continue
    p = getattr(d, "_path", None)
    try:
        m = os.stat(p).st_mtime if p is not None else 0
    except OSError:
        m = 0
    seen.setdefault(name.lower(), {"name": name, "version": d.version, "mtime": m})
print(json.dumps(list(seen.values())))
"""


def installed_packages(project: str, start: bool) -> list[dict[str, Any]] | None:
    """Name, version and install time of every Python package in the container; None when the
    container has no python3 (then there is nothing to save)."""
    import json

    from ds01.client.capture import capture_exec

    res = capture_exec(project, ["python3", "-c", PROBE], start=start, timeout=120)
    if res.code != 0:
        return None
    try:
        data = json.loads(res.text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return data if isinstance(data, list) else None


def known_requirements(ws) -> list[str]:
    """Names already in the Dockerfile's managed block or requirements.txt."""
    from ds01.images.dockerfile import parse_managed_block
    from ds01.projects.launch import requirement_names

    names: list[str] = []
    df, req = ws / "Dockerfile", ws / "requirements.txt"
    if df.is_file():
        try:
            names += requirement_names(parse_managed_block(df.read_text())[1])
        except Exception:  # no markers: nothing recorded there
            pass
    if req.is_file():
        names += requirement_names(req.read_text(errors="replace").splitlines())
    return names


def offer_saved_packages(project: str, yes: bool) -> list[str]:
    """The ``--save-packages`` step: find what was pip-installed by hand and, when accepted, add it
    to the managed block of the project's Dockerfile. Returns the requirements added."""
    from ds01.cli import workspaces
    from ds01.projects.launch import hand_installed
    from ds01.projects.workspace import display_path

    rec = verbs.find_container(project)
    running = rec.get("status") == "running"
    if not running:
        info(f"the container of {project} is stopped: starting it briefly to look at its packages")
    pkgs = installed_packages(project, start=not running)
    if pkgs is None:
        info("no python3 in this container: no Python packages to save")
        return []
    ws = workspaces.directory(project)
    found = hand_installed(pkgs, float(rec.get("created_at") or 0), known_requirements(ws))
    for name in found.listed:
        info(f"{name} was changed by hand but is already listed in your Dockerfile or requirements.txt "
             "(pin its version there yourself if it matters)")
    if not found.add:
        info("no packages were installed by hand in this container: nothing to save")
        return []
    click.echo(f"installed by hand in the container (gone once it is retired): {' '.join(found.add)}")
    df = ws / "Dockerfile"
    if not df.is_file():
        click.echo(f"  {display_path(df)} does not exist; keep them with: "
                   f"image-create {project} --packages '{' '.join(found.add)}'")
        return []
    if not _accept(yes, f"add them to {display_path(df)} so the next launch has them?"):
        click.echo(f"  not saved; later: image-update {project} --add '{' '.join(found.add)}'")
        return []
    return _add_to_dockerfile(df, found.add)


def _accept(yes: bool, question: str) -> bool:
    if yes:
        return True
    if not is_tty():
        click.echo("  (not a terminal: use --yes to accept without asking)")
        return False
    import questionary

    answer = questionary.confirm(question, default=True).ask()
    if answer is None:
        raise click.exceptions.Abort()
    return bool(answer)


def _add_to_dockerfile(df, add: list[str]) -> list[str]:
    from ds01.cli.commands.images import write_text
    from ds01.images.dockerfile import update_managed_block
    from ds01.projects.workspace import display_path

    text = df.read_text()
    write_text(df, update_managed_block(text, add_pip=add))
    ok(f"added {len(add)} package(s) to {display_path(df)}; the next project-launch rebuilds the image")
    return add


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--save-packages", is_flag=True,
              help="first offer to add packages you pip-installed by hand to the project's Dockerfile")
@click.option("--yes", "-y", is_flag=True,
              help="do not ask: kill processes still running, and (with --save-packages) save the packages")
@click.option("--force", is_flag=True, help="kill processes still running without asking")
@click.option("--timeout", type=click.FloatRange(0, 3600), help="seconds to wait before killing (default from config)")
@json_opt
def container_retire(project: str, save_packages: bool, yes: bool, force: bool, timeout: float | None,
                     as_json: bool) -> None:
    """Stop and remove the container of PROJECT and give its GPUs back.

    Your workspace ~/workspace/PROJECT is never touched. Packages you installed by hand
    inside the container are lost with it, unless you keep them with --save-packages.
    When processes other than shells still run in it, they are listed and you are asked (on a
    terminal); a script needs --yes (or --force).

    \b
    Examples:
      container-retire thesis
      container-retire thesis --save-packages        asks before changing the Dockerfile
      container-retire thesis --save-packages --yes
    """
    saved = offer_saved_packages(project, yes) if save_packages else []
    out = verbs.checked(lambda check: api.container_retire(Client(), project, timeout=timeout, check_work=check),
                        yes or force)
    if as_json:
        return print_json({**out, "saved_packages": saved})
    ok(f"retired the container of {project}" + (f" ({out['name']})" if out.get("name") else "")
       + ("; its GPUs are free again" if out.get("gpus") else ""))
    if out.get("workspace"):
        click.echo(f"  workspace {out['workspace']} is kept, unchanged")
    click.echo(f"  next time: project-launch {project}   (or container-deploy {project})")

