"""Create/resolve a user's workspace with the *user's* permissions, never root's.

The daemon runs as root, so it never touches user paths itself: a short child process that has
dropped to the user's uid/gid/groups does the resolve + mkdir and prints the resolved path. That
makes permission checks the kernel's, and a symlink that leaves the trust root (the user's home,
or the configured base) is refused.
"""

from __future__ import annotations

import os
import subprocess

from ds01.errors import DS01Error, PermissionDenied
from ds01.services.identity import Caller

# Runs as the user: make the directory and print where it really is. A shell and two coreutils
# start in a few ms (a Python child would cost ~30 ms on every create).
_CHILD = 'umask 022; mkdir -p -- "$1" && realpath -e -- "$1"'


def base_for(template: str, caller: Caller) -> tuple[str, str]:
    """(workspace base, trust root) for a user from the config template."""
    base = template.format(home=caller.home, user=caller.name)
    root = caller.home if template.startswith("{home}") else base
    return base, root


def ensure_workspace(caller: Caller, project: str, template: str) -> str:
    """Make ``<base>/<project>`` exist (owned by the user) and return its resolved path."""
    base, root = base_for(template, caller)
    path = os.path.join(base, project)
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", _CHILD, "sh", path],
            user=caller.uid, group=caller.gid, extra_groups=_gids(caller),
            capture_output=True, text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"},
        )
    except (subprocess.SubprocessError, OSError) as e:
        raise DS01Error(f"could not prepare the workspace: {e}")
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise PermissionDenied(f"cannot create the workspace {path}: {why}",
                               "check that your home directory exists and is writable by you")
    real = proc.stdout.strip()
    real_root = os.path.realpath(root)
    if not real or os.path.commonpath([real, real_root]) != real_root:
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
