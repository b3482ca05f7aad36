"""Who is calling: built from the kernel-reported uid/gid (SO_PEERCRED), never from the request."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from ds01.errors import InvalidInput, NotFound, PermissionDenied


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    name: str
    home: str
    group: str
    groups: frozenset[str]
    is_admin: bool

    def to_dict(self) -> dict:
        return {"uid": self.uid, "gid": self.gid, "user": self.name, "home": self.home,
                "groups": sorted(self.groups), "admin": self.is_admin}


def caller_from_uid(uid: int, gid: int | None, admin_group: str) -> Caller:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(f"uid {uid} has no account on this host", "ask an admin to create your account")
    gid = pw.pw_gid if gid is None else gid
    try:
        gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        gids = [pw.pw_gid]
    names = set()
    for g in gids:
        try:
            names.add(grp.getgrgid(g).gr_name)
        except KeyError:
            pass
    try:
        primary = grp.getgrgid(pw.pw_gid).gr_name
    except KeyError:
        primary = str(pw.pw_gid)
    return Caller(uid=uid, gid=pw.pw_gid, name=pw.pw_name, home=pw.pw_dir, group=primary,
                  groups=frozenset(names), is_admin=(uid == 0 or admin_group in names))


def target_of(caller: Caller, user: str | None, admin_group: str) -> Caller:
    """The account a request acts on: the caller, or (admins only) ``--user``."""
    if not user or user == caller.name:
        return caller
    if not caller.is_admin:
        raise PermissionDenied("only admins can act on another user's containers",
                               f"admins are root and members of the '{admin_group}' group")
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise NotFound(f"no user named {user!r}") from None
    if pw.pw_uid == 0:
        raise InvalidInput("containers cannot be managed on behalf of root")
    return caller_from_uid(pw.pw_uid, pw.pw_gid, admin_group)
