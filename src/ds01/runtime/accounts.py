"""Pure helpers to give a container user a passwd/group entry (so ``whoami`` works)."""

from __future__ import annotations

from ds01.runtime.base import Account

MINIMAL_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
MINIMAL_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def merge_account(passwd: str | None, group: str | None, acct: Account) -> tuple[str, str]:
    """Return (passwd, group) texts containing ``acct``, replacing any entry with the same name
    or id (an image's own user 1000 must not shadow the caller)."""
    pw_lines = [
        line for line in (passwd or MINIMAL_PASSWD).splitlines()
        if line and not _clashes(line, acct.name, acct.uid, id_field=2)
    ]
    pw_lines.append(f"{acct.name}:x:{acct.uid}:{acct.gid}:{acct.name}:{acct.home}:{acct.shell}")
    gr_lines = [
        line for line in (group or MINIMAL_GROUP).splitlines()
        if line and not _clashes(line, acct.group, acct.gid, id_field=2)
    ]
    gr_lines.append(f"{acct.group}:x:{acct.gid}:")
    return "\n".join(pw_lines) + "\n", "\n".join(gr_lines) + "\n"


def _clashes(line: str, name: str, ident: int, id_field: int) -> bool:
    parts = line.split(":")
    if len(parts) <= id_field:
        return False
    return parts[0] == name or parts[id_field] == str(ident)
