"""Create/resolve a user's workspace with the *user's* permissions, never root's.

The daemon runs as root, so it never creates anything in user paths itself: a short child
process that has dropped to the user's uid/gid/groups does the mkdir. That makes permission checks
the kernel's; a path that then resolves outside the trust root (the user's home, or the configured
base) through a symlink is refused.
"""

from __future__ import annotations

import contextlib
import grp
import os
import subprocess

from ds01.errors import DS01Error, PermissionDenied
from ds01.services.identity import Caller

# Runs as the user: one exec of coreutils' mkdir (a shell, or a Python child, would cost more on
# every create). Where it really is, is resolved afterwards and checked against the trust root.
_MKDIR = "/bin/mkdir"


def base_for(template: str, caller: Caller) -> tuple[str, str]:
    """(workspace base, trust root) for a user from the config template."""
    base = template.format(home=caller.home, user=caller.name)
    root = caller.home if template.startswith("{home}") else base
    return base, root


def ensure_workspace(caller: Caller, project: str, template: str, share_group: str = "") -> str:
    """Make ``<base>/<project>`` exist (owned by the user) and return its resolved path. What it
    creates is private to the user (0700), or, with the admin's ``share_group`` (config
    ``containers.workspace_group``) when the user is a member, 0750 and that group: the child
    runs with it as its primary group, so one mkdir does it."""
    base, root = base_for(template, caller)
    path = os.path.join(base, project)
    gids = _gids(caller)
    gid, umask = caller.gid, 0o077
    if share_group:
        try:
            g = grp.getgrnam(share_group).gr_gid
        except KeyError:
            g = None
        if g in gids:
            gid, umask = g, 0o027
    try:
        proc = subprocess.run(
            [_MKDIR, "-p", "--", path],
            user=caller.uid, group=gid, extra_groups=gids, umask=umask,
            capture_output=True, text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"},
        )
    except (subprocess.SubprocessError, OSError) as e:
        raise DS01Error(f"could not prepare the workspace: {e}")
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise PermissionDenied(f"cannot create the workspace {path}: {why}",
                               "check that your home directory exists and is writable by you")
    # Resolved by the daemon: the user could traverse it (mkdir -p just did), and what is finally
    # mounted is re-opened component by component without following links (see pin below).
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if not os.path.isdir(real) or os.path.commonpath([real, real_root]) != real_root:
        raise PermissionDenied(
            f"your workspace {path} resolves to {real}, outside {real_root}",
            "workspaces must live inside your home; replace the symlink with a real directory",
        )
    st = os.stat(real)
    if st.st_uid != caller.uid:
        raise PermissionDenied(f"{real} is not owned by you", "workspaces must belong to their user")
    return real


def _gids(caller: Caller) -> list[int]:
    try:
        return os.getgrouplist(caller.name, caller.gid)
    except OSError:
        return [caller.gid]


# -- pinning: what Docker mounts is the directory we checked, not whatever a path names later ------
#
# Docker resolves a bind source path as root when the container *starts*, following symlinks. A user
# could replace ~/workspace/<p> with a symlink after the check and have root mount any directory
# (even one the user cannot traverse). So the daemon opens the checked directory itself, walking
# from the trust root with O_NOFOLLOW on every component, and bind-mounts *that open directory* onto
# a root-owned mount point; Docker is given the mount point. Re-done before every start.

_MS_BIND = 4096
_MNT_DETACH = 2


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def open_nofollow(root: str, real: str) -> int:
    """An O_PATH fd of ``real`` reached from ``root`` through real directories only."""
    rel = os.path.relpath(real, root)
    if rel.startswith(".."):
        raise PermissionDenied(f"{real} is outside {root}")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        for part in [] if rel == "." else rel.split(os.sep):
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as e:
        os.close(fd)
        raise PermissionDenied(
            f"your workspace {real} changed while it was being prepared ({e.strerror})",
            "workspaces must be real directories inside your home, not symlinks",
        ) from None
    return fd


@contextlib.contextmanager
def no_workspace_if_refused(caller: Caller, project: str, cfg):
    """Around a create: when it is refused (any DS01Error) and the workspace did not exist
    before, the empty folder it made is removed again (``rmdir`` as the user: only while empty)."""
    from ds01.errors import InvalidInput
    from ds01.names import validate_project

    try:
        base, _ = base_for(cfg.containers.workspace_base, caller)
        fresh = not os.path.lexists(os.path.join(base, validate_project(project)))
    except (InvalidInput, KeyError, OSError, TypeError):
        fresh = False
    try:
        yield
    except DS01Error:
        if fresh:
            _rmdir_as(caller, os.path.join(base, project))
        raise


def _rmdir_as(caller: Caller, path: str) -> None:
    try:
        subprocess.run(["/bin/rmdir", "--", path], user=caller.uid, group=caller.gid,
                       extra_groups=_gids(caller), capture_output=True, timeout=30, cwd="/",
                       env={"PATH": "/usr/bin:/bin"})
    except (subprocess.SubprocessError, OSError):
        pass


def existing_workspace(caller: Caller, project: str, template: str) -> str | None:
    """The workspace path when it already exists as real directories (no symlinks) owned by the
    user, else None. Saves the child process of :func:`ensure_workspace` on the common path; the
    pin that follows opens the same directories the same way."""
    base, root = base_for(template, caller)
    rel = os.path.relpath(os.path.join(base, project), root)
    real_root = os.path.realpath(root)
    real = os.path.normpath(os.path.join(real_root, rel))
    try:
        fd = open_nofollow(real_root, real)
    except PermissionDenied:
        return None
    try:
        return real if os.fstat(fd).st_uid == caller.uid else None
    finally:
        os.close(fd)


def pin_workspace(caller: Caller, real: str, template: str, mount_point: str) -> str:
    """Bind-mount the checked workspace ``real`` onto ``mount_point``; returns the mount point."""
    _, root = base_for(template, caller)
    fd = open_nofollow(os.path.realpath(root), real)
    try:
        if os.fstat(fd).st_uid != caller.uid:
            raise PermissionDenied(f"{real} is not owned by you", "workspaces must belong to their user")
        os.makedirs(mount_point, mode=0o700, exist_ok=True)
        unpin_workspace(mount_point, remove_dir=False)
        ctypes, libc = _libc()
        if libc.mount(f"/proc/self/fd/{fd}".encode(), mount_point.encode(), None, _MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), mount_point)
    finally:
        os.close(fd)
    return mount_point


def unpin_workspace(mount_point: str, remove_dir: bool = True) -> None:
    """Undo :func:`pin_workspace` (idempotent); never touches the workspace itself."""
    if not os.path.isdir(mount_point):
        return
    _, libc = _libc()
    # os.path.ismount cannot see a bind mount within one filesystem: unmount until the kernel
    # says this is no mount point (EINVAL); stacked pins from a crash come off one by one.
    for _ in range(16):
        if libc.umount2(mount_point.encode(), _MNT_DETACH) != 0:
            break
    if remove_dir:
        try:
            os.rmdir(mount_point)  # fails harmlessly if something is still mounted there
        except OSError:
            pass


def is_pinned(mount_point: str) -> bool:
    """Whether ``mount_point`` is a mount point now (from /proc/self/mountinfo)."""
    target = os.path.realpath(mount_point)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            field = line.split()[4]
            if field.encode().decode("unicode_escape") == target:
                return True
    return False
