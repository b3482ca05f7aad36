"""``ds01 admin catalog refresh``: the image catalog kept current from the registries' tag lists.

The daemon does the work (as root: it writes ``<state>/catalog-overlay.yaml``, which every
catalog lookup merges); admins (root or the admin group) run it from here.
"""

from __future__ import annotations

import click

from ds01.cli.options import json_opt
from ds01.cli.output import print_json

_FAMILIES = ("pytorch", "ngc-pytorch", "tensorflow", "ngc-tensorflow", "ngc-jax", "python", "jax")


@click.group()
def catalog() -> None:
    """The image catalog (refreshed from registry tags)."""


@catalog.command()
@click.option("--family", "families", multiple=True, type=click.Choice(_FAMILIES),
              help="only this family (repeatable; a framework name means all its families)")
@click.option("--registry", metavar="URL",
              help="list every family's repository at this v2 registry (a mirror), e.g. http://127.0.0.1:5000")
@click.option("--dry-run", is_flag=True, help="show what would change; write nothing")
@json_opt
def refresh(families: tuple[str, ...], registry: str | None, dry_run: bool, as_json: bool) -> None:
    """List the catalog families' tags (Registry HTTP API v2), keep those of each family's tag
    shape, and write the tags the shipped catalog lacks to the catalog overlay. What a tag does not
    say (e.g. the Python of pytorch/pytorch) is shown as unknown; NGC tags, whose framework version
    the tag does not say, are listed as unknown and not offered.

    \b
    Examples:
      ds01 admin catalog refresh --dry-run
      ds01 admin catalog refresh --family pytorch --registry http://127.0.0.1:5000
    """
    from ds01.client import api
    from ds01.client.http import Client

    out = api.admin_catalog_refresh(Client(), families=list(families), registry=registry, dry_run=dry_run)
    if as_json:
        return print_json(out)
    d = out["diff"]
    for n, count in sorted(out["tags"].items()):
        click.echo(f"{n}: {count} tags listed")
    for n, err in sorted(out["errors"].items()):
        click.echo(f"{n}: not listed: {err}", err=True)
    for img in d["added"]:
        click.echo(f"+ {img}")
    for img in d["removed"]:
        click.echo(f"- {img}")
    for img in d["unknown_added"]:
        click.echo(f"? {img} (version unknown: listed, not offered)")
    verb = "would change" if dry_run else "changed"
    click.echo(f"{verb}: {len(d['added'])} added, {len(d['removed'])} removed; the overlay "
               f"{'would hold' if dry_run else 'holds'} {out['entries']} entries "
               f"({out['unknown']} unknown) in {out['seconds']} s" + ("" if dry_run else f": {out['overlay']}"))
