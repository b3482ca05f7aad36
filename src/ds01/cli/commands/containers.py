"""L2 container commands: each is one daemon call."""

from __future__ import annotations

import click

from ds01.cli import options, verbs
from ds01.cli.lazy import Client
from ds01.cli.options import gpu_options, gpu_request, json_opt
from ds01.cli.output import print_json, table
from ds01.client import api

user_opt = options.user_opt("container")


@click.command()
@click.argument("project")
@click.option("--image", metavar="IMG", help="image to use (default: your project's image, else the lab's base)")
@click.option("--cpu-only", is_flag=True, help="no GPU (the default when no GPU option is given)")
@gpu_options
@user_opt
@json_opt
def create(project: str, image: str | None, cpu_only: bool, gpus: int | None, gpu_profile: str | None,
           mig: int | None, queue: bool, user: str | None, as_json: bool) -> None:
    """Create (but do not start) the container of PROJECT.

    Your workspace ~/workspace/PROJECT is created if missing and mounted at /workspace.

    \b
    Example:
      container-create thesis
      container-create thesis --gpus 1
      container-create thesis --gpu-profile 3g.40gb --queue
    """
    verbs.create(project, image=image, cpu_only=cpu_only, gpu=gpu_request(gpus, gpu_profile, mig), queue=queue,
                 user=user, as_json=as_json)


@click.command()
@click.argument("project")
@user_opt
@json_opt
def start(project: str, user: str | None, as_json: bool) -> None:
    """Start the container of PROJECT.

    \b
    Example:
      container-start thesis
    """
    verbs.verb("start", project, as_json, user=user)


@click.command()
@click.argument("project")
@click.option("--timeout", type=click.FloatRange(0, 3600), help="seconds to wait before killing (default from config)")
@click.option("--yes", "-y", is_flag=True, help="do not ask when processes are still running: kill them")
@click.option("--force", is_flag=True, help="the same as --yes")
@user_opt
@json_opt
def stop(project: str, timeout: float | None, yes: bool, force: bool, user: str | None, as_json: bool) -> None:
    """Stop the container of PROJECT (SIGTERM, then SIGKILL after the timeout).

    When processes other than shells still run in it, they are listed first and you are asked
    (on a terminal); a script needs --yes.

    \b
    Example:
      container-stop thesis --timeout 30
    """
    verbs.verb("stop", project, as_json, yes=yes or force, user=user, timeout=timeout)


@click.command()
@click.argument("project")
@click.option("--force", is_flag=True, help="remove even if it is running")
@user_opt
@json_opt
def remove(project: str, force: bool, user: str | None, as_json: bool) -> None:
    """Remove the container of PROJECT. Your workspace is never touched.

    \b
    Example:
      container-remove thesis
      container-remove thesis --force
    """
    verbs.verb("remove", project, as_json, user=user, force=force)


@click.command(name="container-list")
@click.option("--all", "show_all", is_flag=True, help="include stopped containers (default: running only)")
@click.option("--all-users", is_flag=True, help="(admins) every user's containers")
@user_opt
@json_opt
def list_(show_all: bool, all_users: bool, user: str | None, as_json: bool) -> None:
    """List your containers.

    \b
    Example:
      container-list --all
      container-list --json
    """
    verbs.list_containers(show_all=show_all, all_users=all_users, user=user, as_json=as_json)


@click.command()
@click.option("--all-users", is_flag=True, help="(admins) every user's containers")
@user_opt
@json_opt
def stats(all_users: bool, user: str | None, as_json: bool) -> None:
    """CPU %, memory and processes of your running containers.

    \b
    Example:
      container-stats
    """
    from ds01.units import format_size

    rows = api.container_stats(Client(), all_users=all_users, user=user)
    if as_json:
        return print_json(rows)
    table(["project", "user", "cpu %", "memory", "limit", "pids"],
          ([r["project"], r["user"], f"{r.get('cpu_percent', 0):.1f}", format_size(r.get("memory_bytes", 0)),
            format_size(r.get("memory_limit", 0)), r.get("pids", 0)] for r in rows),
          empty="no running containers")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("project")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@user_opt
def run(project: str, cmd: tuple[str, ...], user: str | None) -> int:
    """Start PROJECT's container if needed and open a shell in it, or run CMD.

    The exit code of CMD becomes the exit code of this command.

    \b
    Example:
      container-run thesis
      container-run thesis -- python train.py --epochs 3
    """
    from ds01.client.stream import run_exec

    return run_exec(project, list(cmd) or None, start=True, user=user)


@click.command()
@click.argument("project")
@user_opt
def attach(project: str, user: str | None) -> int:
    """Open another shell in PROJECT's running container.

    \b
    Example:
      container-attach thesis
    """
    from ds01.client.stream import run_exec

    return run_exec(project, None, start=False, user=user)
