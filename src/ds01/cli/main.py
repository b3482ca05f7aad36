"""Entry points: the umbrella ``ds01`` and one executable per command (``container-create`` …).

Each first offers its arguments to the fast path (``ds01.cli.fast``: the plain forms of the
hottest verbs, run without importing click); anything else, ``--help`` included, goes to click
(``ds01.cli.app``). This module imports neither.
"""

from __future__ import annotations

import sys

from ds01.cli.registry import COMMANDS, NOUNS


def _fast(name: str, args: list[str]) -> None:
    from ds01.cli.fast import try_run

    rc = try_run(name, args)
    if rc is not None:
        sys.exit(rc)


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] in NOUNS and f"{args[0]}-{args[1]}" in COMMANDS:
        _fast(f"{args[0]}-{args[1]}", args[2:])  # ds01 container create P
    elif args and args[0] in COMMANDS:
        _fast(args[0], args[1:])  # ds01 container-create P
    from ds01.cli.app import main as click_main

    click_main()


def run_command(name: str) -> None:
    _fast(name, sys.argv[1:])
    from ds01.cli.app import run_command as click_run

    click_run(name)


def _entry(name: str):
    def entry() -> None:
        run_command(name)

    entry.__name__ = name.replace("-", "_")
    return entry


# One console script per command (see pyproject [project.scripts]).
for _name in COMMANDS:
    globals()[_name.replace("-", "_")] = _entry(_name)
