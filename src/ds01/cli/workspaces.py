"""Where the caller's workspaces are, as the daemon says: its ``containers.workspace_base``
(told by ``api.whoami``) is the one source of truth, so the files the CLI writes are the
ones the daemon builds from and mounts.

Asked once per process. When the daemon cannot be reached, ``ds01.projects.workspace`` falls
back to ``$DS01_WORKSPACE_BASE`` or the default ``{home}/workspace``, so the project helpers
that need no daemon (``dir-create``, ``git-init``, ``readme-create``) keep working offline; a
command that needs the daemon fails at its first call then anyway. Click-free (the fast path
uses it); pathlib only where a Path is asked for.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (not typing's: its import costs every CLI start ~5 ms)
if TYPE_CHECKING:
    from pathlib import Path

# socket path -> the whoami answer, or None when that daemon could not be reached
_asked: dict[str, dict | None] = {}


def whoami() -> dict:
    """``api.whoami``, once per process and socket (raises the daemon's errors)."""
    from ds01.client.http import socket_path_from_env

    sock = socket_path_from_env()
    me = _asked.get(sock)
    if me is None:
        from ds01.cli.lazy import Client
        from ds01.client import api

        me = _asked[sock] = api.whoami(Client())
    return me


def template() -> str | None:
    """The daemon's workspace base template (``{home}``/``{user}``), or None when there is no
    daemon to ask (then the offline fallback applies)."""
    from ds01.client.http import socket_path_from_env
    from ds01.errors import DaemonUnavailable

    sock = socket_path_from_env()
    if sock in _asked and _asked[sock] is None:
        return None
    try:
        me = whoami()
    except DaemonUnavailable:
        _asked[sock] = None
        return None
    return template_of(me)


def template_of(me: dict | None) -> str | None:
    """The template in a whoami answer (None: no answer, the offline fallback applies)."""
    if me is None:
        return None
    from ds01.projects.workspace import DEFAULT_BASE_TEMPLATE

    return me.get("workspace_base") or DEFAULT_BASE_TEMPLATE  # (a daemon from before it said so)


def path(project: str) -> str:
    """``<base>/<project>``, checked (see :func:`ds01.projects.workspace.workspace_path`)."""
    from ds01.projects.workspace import workspace_path

    return workspace_path(project, base_template=template())


def directory(project: str) -> Path:
    from ds01.projects.workspace import workspace_dir

    return workspace_dir(project, base_template=template())


def base() -> Path:
    """The folder holding all of the caller's projects."""
    from ds01.projects.workspace import workspace_base

    return workspace_base(base_template=template())


def ensure(project: str) -> tuple[Path, bool]:
    """Create the project's workspace if missing: ``(path, created)``."""
    from ds01.projects.workspace import ensure_workspace

    return ensure_workspace(project, base_template=template(), group=group())


def group() -> str | None:
    """The admin's sharing group for new workspaces (``containers.workspace_group``), or None."""
    from ds01.client.http import socket_path_from_env

    me = _asked.get(socket_path_from_env())
    return (me or {}).get("workspace_group") or None
