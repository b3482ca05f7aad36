"""``ds01 admin …``: lab setup tasks that run in the daemon as root (admins only)."""

from __future__ import annotations

import click

from ds01.cli.options import json_opt
from ds01.cli.output import ok, print_json


@click.group()
def admin() -> None:
    """Admin tasks (root or members of the admin group).

    \b
    Also:
      ds01 admin dashboard                 everyone's GPUs, containers near limits, recent actions
      ds01 admin exempt USER --for 3d      no idle stop / max runtime for USER until then
      --user USER / --all-users            on container-*, image-*, events, usage, check-limits
    """


@admin.group(name="base-image")
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
    from ds01.client.http import Client

    result: dict = {}
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
