"""``ds01 admin images [list|pull|prune]`` (issue 17). Without a subcommand: every user's
project images, as before ('image-list --all-users')."""

from __future__ import annotations

import click

from ds01.cli.options import json_opt
from ds01.cli.output import echo, ok, print_json


def _client():
    from ds01.client.http import Client

    return Client()


@click.group(invoke_without_command=True)
@json_opt
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """Every user's project images; 'list', 'pull' and 'prune' for every image on the host."""
    if ctx.invoked_subcommand is None:
        from ds01.cli.commands.images import list_

        ctx.invoke(list_, all_users=True, catalog=False, framework=None, user=None, as_json=as_json)


@images.command("list")
@json_opt
def list_all(as_json: bool) -> None:
    """Every image on the host: size, shared/unique bytes, users and containers, last used."""
    from ds01.cli.output import ago, table
    from ds01.client import api
    from ds01.units import format_size

    rows = api.admin_images_usage(_client())["images"]
    if as_json:
        return print_json(rows)
    table(["IMAGE", "SIZE", "UNIQUE", "USERS", "CONTAINERS", "LAST USED", "FROM"],
          [[(r["tags"] or [r["id"][7:19]])[0] + (" (default)" if r["protected"] else ""), format_size(r["size"]),
            format_size(r["unique"]), ",".join(r["users"]) or "-", len(r["containers"]),
            ago(r["last_used"]) if r["last_used"] else "-", r.get("source") or "-"] for r in rows],
          empty="no images")


@images.command("pull")
@click.option("--defaults", is_flag=True, help="the catalog default of each framework that runs on this host")
@click.argument("refs", nargs=-1)
@json_opt
def pull(defaults: bool, refs: tuple[str, ...], as_json: bool) -> None:
    """Pre-fetch images (for a systemd timer: deploy/ds01-images-pull.timer).

    \b
    Example:
      ds01 admin images pull --defaults
      ds01 admin images pull pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
    """
    import sys

    from ds01.cli.pulling import PullView
    from ds01.client import api

    if not defaults and not refs:
        raise click.UsageError("name images to pull, or --defaults")
    view, result = PullView(as_json=as_json), {}
    try:
        for ev in api.admin_images_pull(_client(), list(refs), defaults=defaults or None):
            if "result" in ev:
                result = ev["result"]
                if as_json:
                    view.event(ev)
                continue
            view.event(ev)
    finally:
        view.close()
    if not as_json:
        ok(f"{result.get('pulled', 0)} image(s) present, {result.get('failed', 0)} failed")
    if result.get("failed"):
        sys.exit(10)


@images.command("prune")
@click.option("--unused-for", default="30d", show_default=True, help="remove pulled images unused this long")
@click.option("--only", multiple=True, metavar="PREFIX", help="only images under this name prefix")
@click.option("--dry-run", is_flag=True, help="show what would be removed")
@json_opt
def prune(unused_for: str, only: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Remove pulled images nobody used for a while (never one in use, nor a catalog default)."""
    from ds01.client import api
    from ds01.units import format_size, parse_duration

    try:
        secs = parse_duration(unused_for)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--unused-for")
    res = api.admin_images_prune(_client(), unused_for=secs, dry_run=dry_run or None, only=list(only) or None)
    if as_json:
        return print_json(res)
    verb = "would remove" if dry_run else "removed"
    for r in res["removed"]:
        echo(f"{verb} {r['image']} ({format_size(r['unique'])})")
    for k in res["kept"]:
        echo(f"kept {k['image']}: {k['why']}")
    ok(f"{verb} {len(res['removed'])} image(s), {format_size(res['freed'])}")
