"""Small commands that need no noun."""

from __future__ import annotations

import click

from ds01.cli.output import print_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def whoami(as_json: bool) -> None:
    """Show who the daemon thinks you are (from the kernel, not from anything you send).

    \b
    Example:
      ds01 whoami
    """
    from ds01.client.http import Client

    me = Client().call("GET", "/v1/whoami")
    if as_json:
        return print_json(me)
    click.echo(f"{me['user']} (uid {me['uid']}){' — admin' if me['admin'] else ''}")
