"""Small commands that need no noun."""

from __future__ import annotations

import click

from ds01.cli.options import json_opt
from ds01.cli.output import print_json


@click.command()
@json_opt
def whoami(as_json: bool) -> None:
    """Show who the daemon thinks you are (from the kernel, not from anything you send).

    \b
    Example:
      ds01 whoami
    """
    from ds01.cli.lazy import Client
    from ds01.client import api

    me = api.whoami(Client())
    if as_json:
        return print_json(me)
    click.echo(f"{me['user']} (uid {me['uid']}){' — admin' if me['admin'] else ''}")
