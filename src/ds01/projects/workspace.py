"""Where a user's project lives on the host: ``~/workspace/<project>`` (mounted at ``/workspace``).

These helpers run in the CLI process as the user, never as root, and only touch the user's own
files. They still refuse a workspace that is a symlink out of the user's home: the daemon will
refuse to mount such a path anyway (symlinks out of the workspace are refused), so saying so now,
before anything is scaffolded, is kinder than failing at launch time.

Directory mode: new workspace directories are private to their owner (``0o700``): projects hold
unpublished data, notebooks and sometimes credentials in ``configs/``, and a user's primary group
may well be one everybody is in. When the admin configures a sharing group
(``containers.workspace_group``, told in ``/v1/whoami``) and the user is a member, they get that
group and ``0o750`` instead. Nothing else needs access: containers run as the user's own uid, and
the daemon (root) does not need the group or other bits to mount the directory.
"""

from __future__ import annotations

import os
import pwd

from ds01.errors import Conflict, InvalidInput, PermissionDenied
from ds01.names import validate_project

TYPE_CHECKING = False  # (not typing's: its import costs every CLI start ~5 ms)
if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_BASE_TEMPLATE = "{home}/workspace"
BASE_ENV = "DS01_WORKSPACE_BASE"
DIR_MODE = 0o700
SHARED_MODE = 0o750  # with the admin's sharing group


def current_user() -> tuple[str, str]:
    """(user name, home directory) of the calling uid, from the password database (not $HOME)."""
    pw = pwd.getpwuid(os.getuid())
    return pw.pw_name, pw.pw_dir


def base_path(home: str | os.PathLike[str] | None = None, base_template: str | None = None) -> str:
    """The folder holding all of the caller's projects, as a normalised string.

    ``base_template`` may use ``{home}`` and ``{user}``. The CLI passes the daemon's
    ``containers.workspace_base`` (``ds01.cli.workspaces``), the one source of truth; None (no
    daemon to ask) means ``$DS01_WORKSPACE_BASE`` (same syntax; how unit tests relocate
    workspaces) or the default ``{home}/workspace``."""
    user, pw_home = current_user()
    home_s = os.fspath(home) if home is not None else pw_home
    template = base_template or os.environ.get(BASE_ENV) or DEFAULT_BASE_TEMPLATE
    try:
        base = template.format(home=home_s, user=user)
    except (KeyError, IndexError, ValueError) as e:
        raise InvalidInput(
            f"invalid workspace base template {template!r}",
            "it may only use {home} and {user}, e.g. '{home}/workspace'",
        ) from e
    if not os.path.isabs(base):
        where = "containers.workspace_base in the daemon's config" if base_template else BASE_ENV
        raise InvalidInput(f"workspace base {base!r} is not an absolute path", f"set {where} to an absolute path")
    return os.path.normpath(base)


def workspace_base(home: str | os.PathLike[str] | None = None, base_template: str | None = None) -> Path:
    """:func:`base_path` as a Path."""
    from pathlib import Path

    return Path(base_path(home, base_template))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def workspace_path(
    project: str,
    home: str | os.PathLike[str] | None = None,
    base_template: str | None = None,
) -> str:
    """``<base>/<project>`` for the caller, after checking the name and where the path really leads.

    The boundary is the user's home when the base lies inside it (the default ``~/workspace``), or
    the base itself when an admin or a test put workspaces elsewhere. If the path (or any folder on
    the way, e.g. a symlinked ``~/workspace``) resolves outside that boundary, PermissionDenied.
    Strings and os.path only: the fast path of ``project-launch`` uses it without pathlib."""
    validate_project(project)
    _, pw_home = current_user()
    home_p = os.path.normpath(os.fspath(home) if home is not None else pw_home)
    base = base_path(home_p, base_template)
    boundary = os.path.realpath(home_p if _within(base, home_p) else base)
    path = os.path.join(base, project)
    real = os.path.realpath(path)  # parts that do not exist yet are kept as written
    if not _within(real, boundary):
        raise PermissionDenied(
            f"workspace {path} is a symlink to {real}, outside {boundary}",
            f"DS01 only uses workspaces that really live under {boundary}: remove the symlink "
            f"(rm {path}) and move the project there, or pick another project name",
        )
    return path


def workspace_dir(
    project: str,
    home: str | os.PathLike[str] | None = None,
    base_template: str | None = None,
) -> Path:
    """:func:`workspace_path` as a Path."""
    from pathlib import Path

    return Path(workspace_path(project, home, base_template))


def share_gid(group: str | None) -> int | None:
    """The gid of the admin's sharing group when the caller is a member of it, else None."""
    if not group:
        return None
    import grp

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    return gid if gid in os.getgroups() or gid == os.getgid() else None


def make_dir(path: Path, group: str | None = None) -> None:
    """mkdir private to the caller (0700), or 0750 with the sharing ``group`` (see the module)."""
    path.mkdir(mode=DIR_MODE)
    gid = share_gid(group)
    if gid is not None:
        os.chown(path, -1, gid)
        os.chmod(path, SHARED_MODE)


def ensure_workspace(
    project: str,
    home: str | os.PathLike[str] | None = None,
    base_template: str | None = None,
    group: str | None = None,
) -> tuple[Path, bool]:
    """Create the project's workspace (and the base) if missing; returns ``(path, created)``.
    ``group``: the admin's sharing group (``containers.workspace_group``), if any."""
    path = workspace_dir(project, home, base_template)
    if path.is_dir():
        return path, False
    if path.exists() or path.is_symlink():
        raise Conflict(
            f"{path} exists but is not a directory",
            "move that file away, or pick another project name",
        )
    base = path.parent
    if not base.is_dir():
        base.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            make_dir(base, group)
        except FileExistsError:
            pass
    try:
        make_dir(path, group)
    except FileExistsError:  # created concurrently: fine if it is a directory now
        if not path.is_dir():
            raise Conflict(f"{path} exists but is not a directory", "move that file away") from None
        return workspace_dir(project, home, base_template), False
    # Re-check after creating: a symlink swapped in meanwhile would be caught here.
    return workspace_dir(project, home, base_template), True


def display_path(path: str | os.PathLike[str]) -> str:
    """``~/workspace/x`` instead of ``/home/alice/workspace/x`` in messages."""
    _, home = current_user()
    p = os.path.normpath(os.fspath(path))
    if not _within(p, os.path.normpath(home)):
        return p
    rel = os.path.relpath(p, home)
    return "~" if rel == "." else f"~/{rel}"
