"""Create/resolve a user's workspace with the *user's* permissions, never root's.

The daemon runs as root, so it never touches user paths itself: a short child process that has
dropped to the user's uid/gid/groups does the resolve + mkdir and prints the resolved path. That
makes permission checks the kernel's, and a symlink that leaves the trust root (the user's home,
or the configured base) is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ds01.errors import DS01Error, PermissionDenied
from ds01.services.identity import Caller

# Runs as the user. argv: trust_root, workspace_base, project. Prints JSON.
_CHILD = r"""
import json, os, sys
root, base, project = sys.argv[1], sys.argv[2], sys.argv[3]
def out(**kw):
    print(json.dumps(kw)); sys.exit(0)
try:
    real_root = os.path.realpath(root)
    path = os.path.join(base, project)
    os.makedirs(path, mode=0o755, exist_ok=True)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_root]) != real_root:
        out(error="outside", path=path, real=real, root=real_root)
    st = os.stat(real)
    if st.st_uid != os.getuid():
        out(error="owner", path=real)
    out(path=real)
except PermissionError as e:
    out(error="permission", path=getattr(e, "filename", None) or base, msg=e.strerror)
except OSError as e:
    out(error="os", path=getattr(e, "filename", None) or base, msg=e.strerror)
"""


def base_for(template: str, caller: Caller) -> tuple[str, str]:
    """(workspace base, trust root) for a user from the config template."""
    base = template.format(home=caller.home, user=caller.name)
    root = caller.home if template.startswith("{home}") else base
    return base, root


def ensure_workspace(caller: Caller, project: str, template: str) -> str:
    """Make ``<base>/<project>`` exist (owned by the user) and return its resolved path."""
    base, root = base_for(template, caller)
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD, root, base, project],
            user=caller.uid, group=caller.gid, extra_groups=_gids(caller),
            capture_output=True, text=True, timeout=30, cwd="/", env={"PATH": "/usr/bin:/bin"},
        )
        res = json.loads(proc.stdout or "{}")
    except (subprocess.SubprocessError, ValueError, OSError) as e:
        raise DS01Error(f"could not prepare the workspace: {e}")
    err = res.get("error")
    if not err:
        return res["path"]
    if err == "outside":
        raise PermissionDenied(
            f"your workspace {res['path']} is a symlink to {res['real']}, outside {res['root']}",
            "workspaces must live inside your home; replace the symlink with a real directory",
        )
    if err == "owner":
        raise PermissionDenied(f"{res['path']} is not owned by you", "workspaces must belong to their user")
    raise PermissionDenied(
        f"cannot create the workspace {res.get('path')}: {res.get('msg', err)}",
        "check that your home directory is writable by you",
    )


def _gids(caller: Caller) -> list[int]:
    try:
        return os.getgrouplist(caller.name, caller.gid)
    except OSError:
        return [caller.gid]
