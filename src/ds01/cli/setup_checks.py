"""The checks of ``user-setup``: workspace, daemon, limits, git identity, SSH key; each gives one
line of the ✓/✗ summary."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ds01.cli.lazy import Client
from ds01.cli.prompts import ask
from ds01.client import api


@dataclass
class Check:
    """One line of the user-setup summary. ``ok`` None means "for information"."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None


def render_summary(checks: list[Check]) -> str:
    """The ✓/✗ summary (plain text; pure)."""
    width = max((len(c.name) for c in checks), default=0)
    lines = ["Summary"]
    for c in checks:
        mark = {True: "✓", False: "✗", None: "·"}[c.ok]
        lines.append(f"  {mark} {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.ok is False:
            lines.append(f"    {' ' * width}  fix: {c.fix}")
    bad = sum(c.ok is False for c in checks)
    lines.append("All set." if not bad else f"{bad} thing{'s' * (bad != 1)} to fix (see 'fix:' above); "
                 "run user-setup again afterwards, it only changes what is missing.")
    return "\n".join(lines)


def limits_line(data: dict[str, Any]) -> str:
    """One line about the caller's limits from ``api.limits`` (``{limits, usage, group}``);
    any other flat dict is shown key by key."""
    from ds01.units import format_duration, format_size

    lim, use = data.get("limits"), data.get("usage") or {}
    if isinstance(lim, dict) and "max_gpus" in lim:
        parts = [f"GPUs {_num(use.get('gpus', 0))}/{_num(lim['max_gpus'])} in use",
                 f"containers {use.get('containers', 0)}/{lim.get('max_containers')}"]
        if lim.get("cpus"):
            parts.append(f"{_num(lim['cpus'])} CPUs and {format_size(int(lim.get('memory') or 0))} per container")
        if lim.get("max_runtime"):
            parts.append(f"max runtime {format_duration(float(lim['max_runtime']))}")
        if lim.get("idle_timeout"):
            parts.append(f"idle stop after {format_duration(float(lim['idle_timeout']))}")
        group = data.get("group") or lim.get("group")
        return ", ".join(parts) + (f" (group {group})" if group else "")
    parts = []
    for k, v in data.items():
        if isinstance(v, (dict, list)) or v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and any(
                w in k for w in ("memory", "shm", "bytes", "size")):
            v = format_size(int(v))
        parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts) or "none reported"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_workspace(me: dict | None, interactive: bool = False, yes: bool = False) -> Check:
    """The folder of all projects, where the daemon (``me``: its whoami answer) says; without a
    daemon, where the offline fallback says. An existing one other users can read is offered to
    be made private (asked on a terminal; done with ``yes``)."""
    from ds01.cli import workspaces
    from ds01.projects.workspace import DIR_MODE, display_path, make_dir, share_gid, workspace_base

    base = workspace_base(base_template=workspaces.template_of(me))
    shown = display_path(base)
    group = (me or {}).get("workspace_group") or None
    if base.is_dir() and not base.is_symlink():
        st = base.stat()
        # group bits are fine only for the admin's sharing group; other bits never
        open_bits = st.st_mode & (0o007 if st.st_gid == share_gid(group) else 0o077)
        if not open_bits:
            return Check("workspace", True, f"{shown} exists (private)")
        fix = f"chmod {'750' if st.st_gid == share_gid(group) else '700'} {shown}"
        if not (yes or (interactive and _confirm(f"{shown} is readable by other users. Make it private ({fix})?"))):
            return Check("workspace", False, f"{shown} is readable by other users", fix)
        base.chmod(st.st_mode & 0o7777 & ~open_bits)
        return Check("workspace", True, f"{shown} is now private ({fix})")
    if base.exists() or base.is_symlink():
        return Check("workspace", False, f"{shown} exists but is not a folder", f"move it away (mv {shown} {shown}.old)")
    base.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    make_dir(base, group)
    return Check("workspace", True, f"created {shown} (your projects live here, private to you)")


def _confirm(question: str) -> bool:
    import questionary

    return bool(ask(questionary.confirm(question, default=True)))


def check_daemon() -> tuple[Check, dict | None]:
    from ds01.cli import workspaces
    from ds01.errors import DS01Error

    try:
        me = workspaces.whoami()
    except DS01Error as e:
        return Check("daemon", False, e.message, e.hint or "ask an admin to start ds01d"), None
    role = " (admin)" if me.get("admin") else ""
    return Check("daemon", True, f"reachable; you are {me.get('user')}{role}"), me


def check_limits() -> Check:
    from ds01.errors import DS01Error, NotFound

    try:
        lim = api.limits(Client())
    except NotFound:
        return Check("limits", None, "this server does not report limits yet")
    except DS01Error as e:
        return Check("limits", None, f"could not read them ({e.message})")
    return Check("limits", None, limits_line(lim) if isinstance(lim, dict) else str(lim))


def _git_env() -> dict[str, str]:
    """git finds the global config through $HOME; set it from the password database if unset."""
    from ds01.projects.workspace import current_user

    return {"HOME": current_user()[1], **os.environ, "GIT_TERMINAL_PROMPT": "0"}


def host_name() -> str:
    """This server's name as a laptop would use it."""
    import socket

    fqdn = socket.getfqdn()
    return fqdn if fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def _git(*args: str) -> tuple[int, str]:
    import subprocess

    try:
        cp = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20,
                            stdin=subprocess.DEVNULL, env=_git_env())
    except FileNotFoundError:
        return 127, ""
    return cp.returncode, cp.stdout.strip()


def check_git(name: str | None, email: str | None, interactive: bool) -> Check:
    """Global git identity: set from the flags, else asked on a terminal, else reported."""
    from ds01.projects.git import _check_identity_value

    _check_identity_value("name", name)
    _check_identity_value("email", email)
    code, _ = _git("--version")
    if code == 127:
        return Check("git", False, "git is not installed", "ask an admin to install it (apt install git)")
    want = {"name": name, "email": email}
    have = {k: _git("config", "--global", "--get", f"user.{k}")[1] or None for k in want}
    changed = []
    for k in ("name", "email"):
        value = want[k]
        if value is None and not have[k] and interactive:
            import questionary

            value = ask(questionary.text(f"Your git {k} (for commit messages):",
                                         validate=lambda s: bool(s.strip()) or "please type something")).strip()
            _check_identity_value(k, value)
        if value is not None and value != have[k]:
            if _git("config", "--global", f"user.{k}", value)[0] != 0:
                return Check("git", False, f"could not set user.{k}", f"git config --global user.{k} '{value}'")
            have[k] = value
            changed.append(k)
    if not have["name"] or not have["email"]:
        return Check("git", False, "no name/e-mail for your commits",
                     "user-setup --git-name 'Ada Lovelace' --git-email ada@example.org "
                     "(or: git config --global user.name '…'; git config --global user.email '…')")
    what = "set" if changed else "ok"
    return Check("git", True, f"{have['name']} <{have['email']}> ({what})")


def _key_lines(path: Path) -> int:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(1 for ln in lines if ln.strip() and not ln.lstrip().startswith("#")
               and any(t.startswith(("ssh-", "ecdsa-", "sk-")) for t in ln.split()))


def check_ssh(home: Path) -> Check:
    """``~/.ssh/authorized_keys`` holds a key and sshd will accept its permissions."""
    ssh, keys = home / ".ssh", home / ".ssh" / "authorized_keys"
    n = _key_lines(keys)
    if n == 0:
        return Check("ssh key", False, "no key in ~/.ssh/authorized_keys yet",
                     "run the three laptop steps printed above")
    for p, mode in ((ssh, "700"), (keys, "600")):
        if p.stat().st_mode & 0o022:
            return Check("ssh key", False, f"{n} key(s), but ~/{p.relative_to(home)} is writable by others "
                         "(ssh then ignores it)", f"chmod {mode} ~/{p.relative_to(home)}")
    return Check("ssh key", True, f"{n} key(s) in ~/.ssh/authorized_keys")


def check_vscode(ssh_ok: bool) -> Check:
    """The way from the laptop into containers (container-ssh), for information."""
    how = "'vscode-setup <project>' prints your laptop's ~/.ssh/config block"
    if not ssh_ok:
        return Check("vs code", None, f"after the ssh key: {how}")
    return Check("vs code", None, f"ssh <project>.ds01 / code --remote ssh-remote+<project>.ds01 /workspace: {how}")


def ssh_guidance(user: str, host: str) -> str:
    """Exact steps for SSH and VS Code Remote-SSH, to the host and into containers
    (``container-ssh``). Keys are made on the laptop, never on the server."""
    return f"""\
VS Code / SSH from your laptop (the key is made on your laptop; the server never sees it):
  1. make a key, once:        ssh-keygen -t ed25519
  2. copy it to this server:  ssh-copy-id {user}@{host}
  3. add to ~/.ssh/config on your laptop:
       Host ds01
           HostName {host}
           User {user}
           IdentityFile ~/.ssh/id_ed25519
       Host *.ds01
           ProxyCommand ssh -T {user}@{host} container-ssh %n
           User {user}
           IdentityFile ~/.ssh/id_ed25519
  Then 'ssh ds01' reaches this server and 'ssh <project>.ds01' your project's container (started
  if needed); VS Code opens the container with: code --remote ssh-remote+<project>.ds01 /workspace
  ('vscode-setup <project>' prints the block for one project)."""

