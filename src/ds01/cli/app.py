"""The click side of the CLI: the umbrella group and running one command through click.

pip-style: commands are looked up in a registry and imported lazily; every DS01Error is turned into
one line of message, one of hint, and the exit code of its class, by the handler the fast path
uses too (``ds01.cli.output.guarded``). Entry points are in ``ds01.cli.main`` (which tries
``ds01.cli.fast`` before importing this).
"""

from __future__ import annotations

import importlib
import sys

import click

from ds01.cli.registry import COMMANDS, NOUNS

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _load(name: str) -> click.Command:
    target, _ = COMMANDS[name]
    mod, attr = target.split(":")
    cmd = getattr(importlib.import_module(mod), attr)
    cmd.name = name
    return cmd


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            return _load(name)
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Summaries come from the registry, so help never imports a command module.
        rows = [(n, COMMANDS[n][1]) for n in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if len(args) >= 2 and args[0] in NOUNS and f"{args[0]}-{args[1]}" in COMMANDS:
            args = [f"{args[0]}-{args[1]}", *args[2:]]
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            import difflib

            close = difflib.get_close_matches(args[0], list(COMMANDS), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            ctx.fail(f"no such command {args[0]!r}.{hint} ('ds01 --help' lists them all)")
        return super().resolve_command(ctx, args)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="ds01", message="ds01 %(version)s")
def cli() -> None:
    """DS01: your containers, workspaces and GPUs on the shared server.

    \b
    New here? Try:
      ds01 concepts          what containers, workspaces and images are
      container-create demo  make a container for project 'demo'
      container-run demo     open a shell in it
    """


def _run(cmd: click.Command, prog: str) -> None:
    from ds01.cli.output import guarded

    def run() -> int | None:
        try:
            return cmd.main(prog_name=prog, standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            return 130
        except click.ClickException as e:
            e.show()
            return e.exit_code

    rv = guarded(run)  # DS01Error, Ctrl-C, a closed pipe: as on the fast path
    sys.exit(rv if isinstance(rv, int) else 0)


def main() -> None:
    _run(cli, "ds01")


def run_command(name: str) -> None:
    _run(_load(name), name)
