"""``ds01 admin backup [PATH]``: a consistent copy of the state database, made by the daemon while
it runs (SQLite online backup). Restoring is in the README ("Backup and restore")."""

from __future__ import annotations

import base64
import hashlib
import os

import click

from ds01.cli.options import json_opt
from ds01.cli.output import print_json


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@json_opt
def backup(path: str | None, as_json: bool) -> None:
    """Back up the state database. The daemon keeps the copy in its state directory (root-only,
    the newest 5); with PATH it is also written there, as you, mode 0600.

    \b
    Example:
      ds01 admin backup                       a copy under /var/lib/ds01/backups/
      ds01 admin backup /root/ds01-state.db   and one at PATH
    """
    try:
        out = _run(path)
    except OSError as e:
        raise click.ClickException(f"cannot write {e.filename or path}: {e.strerror}") from None
    if path is not None:
        out["copy"] = os.path.abspath(path)
    if as_json:
        return print_json(out)
    click.echo(f"backup: {out['path']} ({out['bytes']} bytes, schema {out['schema']})")
    if path is not None:
        click.echo(f"copy:   {out['copy']}")


def _run(path: str | None) -> dict:
    from ds01.client import api
    from ds01.client.http import Client

    out = tmp = fd = None
    digest = hashlib.sha256()
    if path is not None:  # before the daemon makes it: a PATH we cannot write fails first
        tmp = f"{path}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        for item in api.admin_backup(Client(), download=path is not None):
            if "chunk" in item and fd is not None:
                block = base64.b64decode(item["chunk"])
                digest.update(block)
                while block:
                    block = block[os.write(fd, block):]
            elif "result" in item:
                out = item["result"]
        if fd is not None and out is not None:
            os.fsync(fd)
            os.close(fd)
            fd = None
            if out.get("sha256") != digest.hexdigest():
                raise click.ClickException("the backup arrived damaged (checksum differs); try again")
            os.replace(tmp, path)
            tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if out is None:
        raise click.ClickException("the daemon sent no result")
    return out
