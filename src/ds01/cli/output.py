"""Printing: JSON for scripts, compact tables for people (rich, imported only when needed).

Click-free on purpose: the fast path of the hot verbs (``ds01.cli.fast``) prints through these
without importing click. Colour only on a terminal, never with ``NO_COLOR`` set.
"""

from __future__ import annotations

import json
import os
import sys
# typing is only for annotations (strings here): importing it costs every CLI start ~5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Sequence

_ANSI = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "cyan": 36}


def colour(text: str, fg: str | None = None, err: bool = False, bold: bool = False, dim: bool = False) -> str:
    """``text`` in colour ``fg`` (bold/dim) when the stream it goes to is a terminal; else plain."""
    stream = sys.stderr if err else sys.stdout
    if "NO_COLOR" in os.environ or not getattr(stream, "isatty", lambda: False)():
        return text
    codes = [str(_ANSI[fg])] if fg else []
    codes += ["1"] * bold + ["2"] * dim
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes else text


def echo(msg: str = "", err: bool = False, nl: bool = True) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(msg + "\n" if nl else msg)
    stream.flush()


def print_json(data: Any) -> None:
    echo(json.dumps(data, indent=2, default=str))


def ok(msg: str) -> None:
    echo(colour("✓ ", "green") + msg)


def info(msg: str) -> None:
    echo("· " + msg)


def report_error(e: Any) -> None:
    """A DS01Error for a person: one line of message, one of hint; a traceback only with DS01_DEBUG."""
    if os.environ.get("DS01_DEBUG"):
        import traceback

        traceback.print_exc()
    echo(colour(f"error: {e.message}", "red", err=True), err=True)
    if e.hint:
        echo(f"hint: {e.hint}", err=True)


def guarded(run: Any) -> Any:
    """``run()``, with the errors every command can end in turned into a message and an exit code,
    the same for the fast path and click (``ds01.cli.app`` adds click's own): a DS01Error is one
    line of message, one of hint and its class's exit code; Ctrl-C is "aborted", 130; a closed
    pipe (``| head``) is quiet, 1."""
    from ds01.errors import DS01Error

    try:
        return run()
    except DS01Error as e:
        report_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\naborted\n")
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    import time

    secs = max(0, time.time() - ts)
    from ds01.units import format_duration

    return format_duration(secs) + " ago"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "nothing to show") -> None:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    if not rows:
        echo(empty)
        return
    if not sys.stdout.isatty():
        # plain aligned columns: fast, grep-friendly, no terminal codes
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(columns)]
        echo("  ".join(h.upper().ljust(w) for h, w in zip(columns, widths)).rstrip())
        for r in rows:
            echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for h in columns:
        t.add_column(h.upper())
    for r in rows:
        t.add_row(*r)
    Console().print(t)
