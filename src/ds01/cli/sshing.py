"""The bodies of ``container-ssh`` and ``vscode-setup`` (click-free: ``container-ssh P`` runs on
every SSH connection, through the fast path).

``container-ssh`` is an OpenSSH ``ProxyCommand``: its stdout *is* the SSH connection, so before
anything can print, fd 1 is moved aside for the connection and stdout is pointed at stderr (what
the launch step prints, and every error, reaches the user through ssh's stderr).
"""

from __future__ import annotations

import os

SUFFIX = ".ds01"  # `ProxyCommand container-ssh %n` for `Host *.ds01`: thesis.ds01 is thesis


def project_of(name: str) -> str:
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else name


def container_ssh(project: str, *, start: bool = True, launch_args: list[str] | tuple[str, ...] = ()) -> int:
    """Bridge this process's stdin/stdout to ``sshd -i`` in PROJECT's container. Unless
    ``start`` is False, a missing or stopped container is started first like ``project-launch
    PROJECT --background`` (``launch_args``: its GPU options)."""
    from ds01.client.ssh import bridge
    from ds01.errors import DS01Error

    project = project_of(project)
    out_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        return bridge(project, start=start, out_fd=out_fd)
    except DS01Error as e:
        if not (start and e.details.get("start")):
            raise
        exists = bool(e.details.get("exists"))
    rc = launch(project, list(launch_args), exists)
    if rc:
        # the daemon records the refusal (e.g. a project that is not the caller's); the launch's
        # own message was already printed
        try:
            return bridge(project, start=False, out_fd=out_fd)
        except DS01Error:
            return rc
    return bridge(project, start=False, out_fd=out_fd)


def launch(project: str, args: list[str], exists: bool = False) -> int:
    """``project-launch PROJECT --background ARGS`` (through click: this runs only when the
    container is not running, so it is not the hot path), printing on stderr; its exit code.
    A stopped container of a project without a Dockerfile (made by container-create) is started
    as it is (``container-start``); without a container such a project is refused by the launch
    (a mistyped name must not create a container)."""
    import click

    from ds01.cli.app import _load
    from ds01.cli.output import guarded

    def run() -> int:
        try:
            if exists and not _has_dockerfile(project):
                _load("container-start").main([project], prog_name="container-start", standalone_mode=False)
                return 0
            _load("project-launch").main([project, "--background", *args], prog_name="project-launch",
                                         standalone_mode=False)
            return 0
        except click.ClickException as e:
            e.show()
            return e.exit_code

    return guarded(run) or 0


def _has_dockerfile(project: str) -> bool:
    from ds01.cli import workspaces

    return os.path.isfile(os.path.join(workspaces.path(project), "Dockerfile"))


# --------------------------------------------------------------------------- vscode-setup


def config_block(user: str, host: str, project: str | None) -> str:
    """The laptop's ``~/.ssh/config`` block (pure): one project, or ``*.ds01`` for all of them."""
    if project:
        return (f"Host {project}{SUFFIX}\n    ProxyCommand ssh -T {user}@{host} container-ssh {project}\n"
                f"    User {user}\n")
    return f"Host *{SUFFIX}\n    ProxyCommand ssh -T {user}@{host} container-ssh %n\n    User {user}\n"


def vscode_text(user: str, host: str, project: str | None, host_key: str | None) -> str:
    """What ``vscode-setup`` prints (pure)."""
    name = f"{project}{SUFFIX}" if project else f"<project>{SUFFIX}"
    block = "".join("       " + ln + "\n" for ln in config_block(user, host, project).splitlines())
    out = [
        "VS Code / SSH straight into your container (the key is made on your laptop; this server never makes one):",
        "  1. make a key, once:        ssh-keygen -t ed25519",
        f"  2. copy it to this server:  ssh-copy-id {user}@{host}",
        "  3. add to ~/.ssh/config on your laptop:",
        block.rstrip("\n"),
    ]
    if host_key:
        pattern = name if project else f"*{SUFFIX}"
        out += ["  4. trust your containers' host key (the same in all of them): add to ~/.ssh/known_hosts",
                f"       {pattern} {host_key}"]
    out += [
        f"Then:  ssh {name}                                  a shell in the container",
        f"       code --remote ssh-remote+{name} /workspace   VS Code, in the container",
        f"       ssh -N -L 8888:127.0.0.1:8888 {name}        reach a server inside it (e.g. JupyterLab)",
        "The container starts on the first connection if it is not running (use 'container-ssh P --no-start'",
        "in ProxyCommand to never start one). No port is opened on this server for any of it.",
    ]
    return "\n".join(out)
