"""Printing: JSON for scripts, compact tables for people (rich, imported only when needed)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, Iterable, Sequence

import click


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def ok(msg: str) -> None:
    click.echo(click.style("✓ ", fg="green") + msg)


def info(msg: str) -> None:
    click.echo("· " + msg)


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    secs = max(0, dt.datetime.now().timestamp() - ts)
    from ds01.units import format_duration

    return format_duration(secs) + " ago"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "nothing to show") -> None:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    if not rows:
        click.echo(empty)
        return
    if not sys.stdout.isatty():
        # plain aligned columns: fast, grep-friendly, no terminal codes
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(columns)]
        click.echo("  ".join(h.upper().ljust(w) for h, w in zip(columns, widths)).rstrip())
        for r in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for h in columns:
        t.add_column(h.upper())
    for r in rows:
        t.add_row(*r)
    Console().print(t)
