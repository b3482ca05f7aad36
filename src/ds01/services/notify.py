"""Messages to a user: every terminal they are logged in on (utmp) and the project's
``/workspace/.ds01-alerts`` file, appended *as the user* (never as root, so a symlink planted in
the workspace cannot redirect the write)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

from ds01.services.identity import Caller
from ds01.services.workspace import _gids, base_for

_APPEND = r"""
import os, sys
path, text = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
os.write(fd, text.encode()); os.close(fd)
"""


def notify_quietly(ctx, who: Caller, project: str, text: str) -> None:
    """:func:`notify` for the daemon's own messages: a failure is logged, never raised (a failed
    message must not undo what it reports, e.g. a served request)."""
    try:
        notify(who, project, text, ctx.config.containers.workspace_base, ctx.clock())
    except Exception:
        logging.getLogger("ds01d").exception("could not notify %s", who.name)


def notify(who: Caller, project: str, text: str, workspace_template: str, now: float | None = None) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now or time.time()))
    line = f"[{stamp}] ds01: {text}\n"
    base, _ = base_for(workspace_template, who)
    subprocess.run([sys.executable, "-I", "-S", "-c", _APPEND, f"{base}/{project}/.ds01-alerts", line],
                   user=who.uid, group=who.gid, extra_groups=_gids(who), capture_output=True, timeout=10,
                   cwd="/", env={})
    for tty in user_ttys(who.name):
        _write_tty(tty, who, "\r\n" + line.replace("\n", "\r\n"))


def user_ttys(user: str) -> list[str]:
    """The terminals ``user`` is logged in on, from utmp (what ``who`` shows)."""
    try:
        out = subprocess.run(["who"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    ttys = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == user:
            ttys.append("/dev/" + parts[1])
    return sorted(set(ttys))


def _write_tty(tty: str, who: Caller, text: str) -> None:
    # As the user, with O_NOFOLLOW and O_NOCTTY: only terminals the user can write to.
    script = ("import os,sys\nfd=os.open(sys.argv[1], os.O_WRONLY|os.O_NOCTTY|os.O_NOFOLLOW|os.O_NONBLOCK)\n"
              "os.write(fd, sys.argv[2].encode()); os.close(fd)")
    subprocess.run([sys.executable, "-I", "-S", "-c", script, tty, text], user=who.uid, group=who.gid,
                   capture_output=True, timeout=5, cwd="/", env={})
