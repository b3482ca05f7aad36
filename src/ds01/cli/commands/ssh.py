"""``container-ssh`` (OpenSSH ProxyCommand into a project's container) and ``vscode-setup``."""

from __future__ import annotations

import sys

import click

from ds01.cli.options import CTX, gpu_options


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--no-start", is_flag=True, help="never start the container: refuse when it is not running")
@gpu_options
def container_ssh(project: str, no_start: bool, gpus: int | None, gpu_profile: str | None, mig: int | None,
                  queue: bool) -> int:
    """SSH straight into PROJECT's container: an OpenSSH ProxyCommand (not for typing).

    Runs the container's own sshd as you, over the DS01 daemon (no port is opened anywhere);
    keys come from your ~/.ssh/authorized_keys on this server. The container is started first
    if needed, like 'project-launch PROJECT --background' (same GPU options). PROJECT.ds01 is
    accepted as PROJECT. 'vscode-setup' prints the laptop side.

    \b
    In ~/.ssh/config on your laptop:
      Host thesis.ds01
          ProxyCommand ssh -T you@server container-ssh thesis
          User you
    """
    from ds01.cli.sshing import container_ssh as run

    args: list[str] = []
    for flag, value in (("--gpus", gpus), ("--gpu-profile", gpu_profile), ("--mig", mig)):
        if value is not None:
            args += [flag, str(value)]
    if queue:
        args.append("--queue")
    return run(project, start=not no_start, launch_args=args)


@click.command(context_settings=CTX)
@click.argument("project", required=False)
def vscode_setup(project: str | None) -> None:
    """Print the laptop's ~/.ssh/config block for SSH and VS Code into a container.

    With PROJECT, the block for that project (Host PROJECT.ds01); without, one block for all
    your projects (Host *.ds01). Checks ~/.ssh/authorized_keys here and says what is missing.
    It never makes a key on this server: keys are made on your laptop.

    \b
    Examples:
      vscode-setup thesis
      code --remote ssh-remote+thesis.ds01 /workspace     (on the laptop, afterwards)
    """
    from pathlib import Path

    from ds01.cli.lazy import Client
    from ds01.cli.output import ok
    from ds01.cli.setup_checks import check_ssh, host_name
    from ds01.cli.sshing import project_of, vscode_text
    from ds01.client import api
    from ds01.errors import DS01Error
    from ds01.names import validate_project
    from ds01.projects.workspace import current_user

    if project:
        project = validate_project(project_of(project))
    user, home = current_user()
    try:
        host_key = api.ssh_host_key(Client()).get("public_key")
    except DS01Error:
        host_key = None
    click.echo(vscode_text(user, host_name(), project, host_key))
    click.echo()
    check = check_ssh(Path(home))
    if check.ok:
        ok(check.detail)
    else:
        click.secho(f"✗ {check.detail}", fg="red", err=True)
        if check.fix:
            click.echo(f"  fix: {check.fix}", err=True)
        sys.exit(1)
