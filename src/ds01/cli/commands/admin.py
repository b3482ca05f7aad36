"""``ds01 admin …``: running the lab (admins: root or members of the admin group).

One namespace for every admin task; the subcommands are imported only when run (like the top
level, ``ds01 admin --help`` loads no command module). The older spellings ``ds01 admin-dashboard``
and ``ds01 admin-exempt`` stay as aliases in the top-level registry.
"""

from __future__ import annotations

import importlib

import click

from ds01.cli.options import json_opt
from ds01.cli.output import ok, print_json

# name -> ("module:attribute", one-line summary)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "dashboard": ("ds01.cli.commands.status:admin_dashboard", "Status for everyone, near limits, lifecycle"),
    "exempt": ("ds01.cli.commands.lifecycle:exempt", "Exempt a user from idle stops / max runtime"),
    "limits": ("ds01.cli.commands.admin:limits", "Show or change limits of a user, a group or the defaults"),
    "reload": ("ds01.cli.commands.admin:reload", "Re-read the config now (like 'kill -HUP' of ds01d)"),
    "users": ("ds01.cli.commands.admin:users", "Every account the lab knows: group, overrides, what they hold"),
    "usage": ("ds01.cli.commands.admin:usage", "GPU-hours and container-hours of everyone"),
    "events": ("ds01.cli.commands.status:events", "Everyone's events (same options as 'ds01 events')"),
    "images": ("ds01.cli.commands.admin_images:images", "Images: list every one, pull, prune"),
    "doctor": ("ds01.cli.commands.admin:doctor", "Check the host settings isolation relies on"),
    "base-image": ("ds01.cli.commands.admin:base_image", "The lab's offline base image (bootstrap)"),
    "catalog": ("ds01.cli.commands.catalog:catalog", "Refresh the image catalog from registry tags"),
    "backup": ("ds01.cli.commands.backup:backup", "Back up the state database (online; restore: README)"),
    "cluster": ("ds01.cli.commands.cluster:cluster", "Cluster mode: nodes, and DS01's policy synced to Slurm"),
}


class AdminGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        mod, attr = SUBCOMMANDS[name][0].split(":")
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(n, SUBCOMMANDS[n][1]) for n in sorted(SUBCOMMANDS)])

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in SUBCOMMANDS and not args[0].startswith("-"):
            import difflib

            close = difflib.get_close_matches(args[0], list(SUBCOMMANDS), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            ctx.fail(f"no such admin command {args[0]!r}.{hint} ('ds01 admin --help' lists them all)")
        return super().resolve_command(ctx, args)


@click.group(cls=AdminGroup)
def admin() -> None:
    """Admin tasks (root or members of the admin group).

    \b
    Example:
      ds01 admin dashboard
      ds01 admin limits set alice max_gpus=2
      ds01 admin reload
      ds01 admin doctor --strict
    Also: --user USER / --all-users on container-*, image-*, events, usage, check-limits.
    """


def _client():
    from ds01.client.http import Client

    return Client()


# -- limits ---------------------------------------------------------------------------------------
@click.group()
def limits() -> None:
    """Limits of one user, one limits group or the defaults, written into the config file
    (comments and order kept) and applied at once (no restart). Every change is an event.

    \b
    Example:
      ds01 admin limits show                       defaults, groups and per-user overrides
      ds01 admin limits show alice                 alice's effective limits and where each comes from
      ds01 admin limits set alice max_gpus=2 memory=32g
      ds01 admin limits set --group students idle_timeout=1h
      ds01 admin limits unset alice max_gpus       back to the group's / the default value
    """


def _scope(user: str | None, group: str | None, defaults: bool) -> None:
    if sum(bool(x) for x in (user, group, defaults)) != 1:
        raise click.UsageError("name exactly one of USER, --group G or --defaults")


def _value(v) -> str:
    return "-" if v is None else str(v) if not isinstance(v, float) or v != int(v) else f"{v:g}"


@limits.command(name="show")
@click.argument("user", required=False)
@click.option("--group", metavar="G", help="a limits group (groups[].name in the config)")
@json_opt
def limits_show(user: str | None, group: str | None, as_json: bool) -> None:
    """Show limits: USER's effective ones, a group's, or (neither) the defaults and every override."""
    from ds01.cli.output import table
    from ds01.client import api

    if user and group:
        raise click.UsageError("name USER or --group G, not both")
    out = api.admin_limits(_client(), user=user, group=group)
    if as_json:
        return print_json(out)
    if out["scope"] == "user":
        click.echo(f"{out['user']}" + (f" (group {out['group']})" if out.get("group") else " (no group)"))
        table(["limit", "value", "from"], ([k, _value(v), out["sources"].get(k, "")]
                                           for k, v in out["effective"].items()))
    elif out["scope"] == "group":
        who = ", ".join(filter(None, [f"unix group {out['unix_group']}" if out.get("unix_group") else "",
                                      ("members: " + ", ".join(out["members"])) if out["members"] else ""]))
        click.echo(f"group {out['group']}" + (f" ({who})" if who else ""))
        table(["limit", "value", "from"], ([k, _value(v), "group" if k in out["set"] else "defaults"]
                                           for k, v in out["effective"].items()))
    else:
        click.echo("defaults:")
        table(["limit", "value"], ([k, _value(v)] for k, v in out["effective"].items()))
        click.echo("")
        table(["group", "members", "sets"],
              ([g["name"], (f"@{g['unix_group']} " if g.get("unix_group") else "") + ",".join(g["members"]),
                " ".join(f"{k}={_value(v)}" for k, v in g["set"].items()) or "-"] for g in out["groups"]),
              empty="no limits groups")
        click.echo("")
        table(["user", "overrides"], ([u, " ".join(f"{k}={_value(v)}" for k, v in s.items())]
                                      for u, s in out["users"].items()), empty="no per-user overrides")


def _change(user: str | None, group: str | None, defaults: bool, set_: dict, unset: list[str],
            as_json: bool) -> None:
    from ds01.client import api

    _scope(user, group, defaults)
    out = api.admin_limits_change(_client(), user=user, group=group, defaults=defaults, set=set_, unset=unset)
    if as_json:
        return print_json(out)
    if not out["changes"]:
        ok(f"{out['target']}: nothing to change (already so)")
    for k, ch in out["changes"].items():
        ok(f"{out['target']}: {k} {_value(ch['from'])} → {_value(ch['to'])}")
    click.echo(f"written to {out['config']} and applied (no restart needed)")
    _restart_note(out["reload"])


@limits.command(name="set")
@click.argument("user", required=False)
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--group", metavar="G", help="set the limits of group G instead of a user's")
@click.option("--defaults", is_flag=True, help="set the defaults (everyone without an override)")
@json_opt
def limits_set(user: str | None, assignments: tuple[str, ...], group: str | None, defaults: bool,
               as_json: bool) -> None:
    """Set limits (KEY=VALUE, e.g. max_gpus=2 memory=32g idle_timeout=4h) of USER, a group or the
    defaults. Validated like the config file; applied at once."""
    from ds01.models.config_edit import parse_assignments

    if user and "=" in user:  # `set --group G k=v`: click put the first assignment in USER
        assignments, user = (user, *assignments), None
    if not assignments:
        raise click.UsageError("say what to set: KEY=VALUE (e.g. max_gpus=2)")
    _change(user, group, defaults, parse_assignments(assignments), [], as_json)  # InvalidInput: exit 3


@limits.command(name="unset")
@click.argument("user", required=False)
@click.argument("keys", nargs=-1, metavar="KEY...")
@click.option("--group", metavar="G", help="unset in group G instead of a user's override")
@json_opt
def limits_unset(user: str | None, keys: tuple[str, ...], group: str | None, as_json: bool) -> None:
    """Drop settings of USER (or a group), so they fall back to the group's / the default value."""
    if group and user:  # `unset --group G key`: click put the first key in USER
        keys, user = (user, *keys), None
    if not keys:
        raise click.UsageError("say which limits to unset (e.g. max_gpus)")
    _change(user, group, False, {}, list(keys), as_json)


# -- reload -------------------------------------------------------------------------------------
def _restart_note(out: dict) -> None:
    for r in out.get("restart_required") or []:
        click.echo(f"needs a restart of ds01d: {r['key']} (running {r['running']!r}, file {r['file']!r}): "
                   f"{r['why']}", err=True)


@click.command()
@json_opt
def reload(as_json: bool) -> None:
    """Re-read the config file now (what 'systemctl reload ds01d' / SIGHUP do). An invalid file
    changes nothing and its errors are printed with key and line; running containers, allocations
    and the queue are untouched; a lowered limit applies to new requests.

    \b
    Example:
      sudo ds01d --check-config /etc/ds01/config.yaml && ds01 admin reload
    """
    from ds01.client import api

    out = api.admin_reload(_client())
    if as_json:
        return print_json(out)
    ch = out["changed"]
    ok(f"reloaded {out['config']}: " + (f"{len(ch)} setting(s) changed" if ch else "nothing changed"))
    for k in ch[:40]:
        click.echo(f"  {k}")
    if len(ch) > 40:
        click.echo(f"  … and {len(ch) - 40} more")
    _restart_note(out)


# -- views ----------------------------------------------------------------------------------------
@click.command()
@json_opt
def users(as_json: bool) -> None:
    """Every account the lab knows (limit overrides, group members, admins, container owners)."""
    from ds01.cli.output import table
    from ds01.client import api

    rows = api.admin_users(_client())
    if as_json:
        return print_json(rows)
    table(["user", "admin", "group", "overrides", "containers", "running", "gpus"],
          ([r["user"], "yes" if r.get("admin") else "", r.get("group") or "-", ",".join(r.get("overrides") or [])
            or "-", r.get("containers", "-"), r.get("running", "-"),
            f"{r['gpus']:g}/{r['max_gpus']:g}" if r.get("exists") else "(no such account)"] for r in rows),
          empty="no users")


@click.command()
@click.option("--since", default="30d", show_default=True, help="window start: 1d, 30d, or a date 2024-05-01")
@click.option("--until", default=None, help="window end (default now)")
@click.option("--by", type=click.Choice(["user", "group", "project", "node"]), default="user", show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="print CSV")
@json_opt
@click.pass_context
def usage(ctx: click.Context, since: str, until: str | None, by: str, as_csv: bool, as_json: bool) -> None:
    """Everyone's GPU-hours and container-hours ('ds01 usage --all-users')."""
    from ds01.cli.commands.status import usage as usage_cmd

    ctx.invoke(usage_cmd, since=since, until=until, by=by, user=None, all_users=True, as_csv=as_csv,
               as_json=as_json)


@click.command()
@json_opt
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """Every user's project images (a listing: 'image-list --all-users')."""
    from ds01.cli.commands.images import list_

    ctx.invoke(list_, all_users=True, catalog=False, framework=None, user=None, as_json=as_json)


@click.command()
@click.option("--strict", is_flag=True, help="exit 1 when any check warns")
@click.option("--proc-mounts", default="/proc/mounts", show_default=True, metavar="FILE",
              help="mount table to check /proc's hidepid in")
@click.option("--homes", "homes_dir", metavar="DIR", help="check DIR's subdirectories instead of every account's home")
@click.option("--nvidia-config", default="/etc/nvidia-container-runtime/config.toml", show_default=True,
              metavar="FILE", help="the NVIDIA container runtime's config")
@click.option("--docker-group", default="docker", show_default=True, metavar="NAME")
@json_opt
def doctor(strict: bool, proc_mounts: str, homes_dir: str | None, nvidia_config: str, docker_group: str,
           as_json: bool) -> None:
    """Check the host settings DS01's isolation relies on: /proc mounted with hidepid=2, homes not
    world-readable, the NVIDIA runtime's volume-mount device lists off, the docker group empty,
    and the daemon's own directories' owner and mode. Each warning comes with its fix.

    \b
    Example:
      ds01 admin doctor
      ds01 admin doctor --strict --json
    """
    import sys

    from ds01.cli.doctor import host_checks, warn
    from ds01.client import api
    from ds01.errors import DS01Error

    checks = host_checks(proc_mounts=proc_mounts, homes_dir=homes_dir, nvidia_config=nvidia_config,
                         docker_group=docker_group)
    try:
        checks += api.admin_doctor(_client())["checks"]
    except DS01Error as e:
        checks.append(warn("daemon", f"the daemon's own files were not checked: {e.message}",
                           e.hint or "start ds01d and run the doctor again"))
    warnings = [c for c in checks if c["status"] != "ok"]
    if as_json:
        print_json({"checks": checks, "warnings": len(warnings)})
    else:
        for c in checks:
            mark = click.style("ok  ", fg="green") if c["status"] == "ok" else click.style("WARN", fg="yellow")
            click.echo(f"{mark} {c['check']}: {c['detail']}")
            if c.get("fix"):
                click.echo(f"     fix: {c['fix']}")
        click.echo(f"{len(checks) - len(warnings)} ok, {len(warnings)} warning(s)")
    if strict and warnings:
        sys.exit(1)


# -- base image -----------------------------------------------------------------------------------
@click.group(name="base-image")
def base_image() -> None:
    """The lab's offline base image (the CPU default of the catalog)."""


@base_image.command()
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite to bootstrap")
@click.option("--tag", default="ds01/base:latest", show_default=True, help="image name:tag to create")
@click.option("--force", is_flag=True, help="rebuild even if the image exists")
@json_opt
def bootstrap(suite: str, tag: str, force: bool, as_json: bool) -> None:
    """Build the base image without any registry: Debian minbase + python3, pip and a venv at
    /opt/venv, imported with 'docker import'. Exits 0 at once if the image already exists.

    Takes a few minutes (downloads ~40 MB of packages from the host's Debian mirror; they are
    cached for the next time).

    \b
    Example:
      sudo ds01 admin base-image bootstrap
    """
    from ds01.client import api

    result: dict = {}
    from ds01.client.http import Client

    for item in api.base_image_bootstrap(Client(timeout=None), suite=suite, tag=tag, force=force):
        if "stream" in item and not as_json:
            click.echo(str(item["stream"]).rstrip("\n"))
        elif "result" in item:
            result = item["result"]
    if as_json:
        return print_json(result)
    if result.get("created"):
        ok(f"{result['image']} is ready")
    else:
        ok(f"{result.get('image', tag)} already exists (--force rebuilds it)")
