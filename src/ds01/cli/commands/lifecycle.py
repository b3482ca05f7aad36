"""Lifecycle commands: ``container-keepalive`` (users) and ``ds01 admin exempt`` (admins)."""

from __future__ import annotations

import time

import click

from ds01.cli.lazy import Client as _client
from ds01.cli.options import json_opt
from ds01.cli.output import ok, print_json, table
from ds01.client import api


def _duration(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    from ds01.units import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=what) from None


def _at(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.command()
@click.argument("project")
@click.option("--for", "for_", metavar="DURATION", help="how long, e.g. 30m, 4h (default and maximum: lab config)")
@click.option("--user", "user", metavar="USER", help="(admins) act on USER's container")
@json_opt
def keepalive(project: str, for_: str | None, user: str | None, as_json: bool) -> None:
    """Keep PROJECT's running container from being stopped as idle, for a while.

    Idle time during the keepalive does not count; after it ends, the normal idle timeout
    applies again (with its warnings). The maximum runtime still applies.

    \b
    Example:
      container-keepalive thesis
      container-keepalive thesis --for 4h
    """
    seconds = _duration(for_, "--for")
    out = api.container_keepalive(_client(), project, seconds=seconds, user=user)
    if as_json:
        return print_json(out)
    from ds01.units import format_duration

    ok(f"{project}: not stopped as idle before {_at(out['keepalive_until'])} "
       f"(then after {format_duration(out['idle_timeout'])} idle at the earliest)")
    if out.get("max_runtime_at"):
        click.echo(f"  the maximum runtime still ends it at {_at(out['max_runtime_at'])}")


@click.command()
@click.argument("user", required=False)
@click.option("--for", "for_", metavar="DURATION", help="how long, e.g. 3d (required to grant)")
@click.option("--what", "kind", type=click.Choice(["idle", "runtime", "all"]), default="all", show_default=True,
              help="exempt from idle stops, from the maximum runtime, or both")
@click.option("--reason", metavar="TEXT", help="why (recorded in the audit log)")
@click.option("--list", "list_", is_flag=True, help="show active exemptions")
@click.option("--revoke", metavar="ID", type=int, help="end exemption ID now")
@json_opt
def exempt(user: str | None, for_: str | None, kind: str, reason: str | None, list_: bool, revoke: int | None,
           as_json: bool) -> None:
    """(admins) Exempt USER from idle stops and/or the maximum runtime until an expiry.

    \b
    Example:
      ds01 admin exempt alice --for 3d --reason "paper deadline"
      ds01 admin exempt bob --for 12h --what idle
      ds01 admin exempt --list
      ds01 admin exempt --revoke 4
    """
    c = _client()
    if list_ or (user is None and revoke is None):
        rows = api.exemptions(c)
        if as_json:
            return print_json(rows)
        table(["id", "user", "what", "until", "by", "reason"],
              ([r["id"], r["user"], r["kind"], _at(r["until"]), r["granted_by"], r["reason"] or ""] for r in rows),
              empty="no active exemptions")
        return
    if revoke is not None:
        out = api.exemption_revoke(c, revoke)
        return print_json(out) if as_json else ok(f"exemption {revoke} ended")
    seconds = _duration(for_, "--for")
    if seconds is None:
        raise click.UsageError("say how long with --for (e.g. --for 3d)")
    out = api.exemption_grant(c, user, kind=kind, seconds=seconds, reason=reason)
    if as_json:
        return print_json(out)
    ok(f"{user} is exempt ({kind}) until {_at(out['until'])} (id {out['id']})")
