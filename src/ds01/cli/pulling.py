"""Pull progress for people (issue 17), from the daemon's events (``ds01.services.pulls``):
``{"pull", "layer", "status", "current", "total", "speed", "eta"}``, ``{"line"}`` and finally
``{"pulled": …}``. On a terminal: a ``rich`` progress bar per layer (rich imported only when a
pull is shown); elsewhere one line per layer event; with ``--json`` every event as a JSON line.
Click-free: the build progress (``cli.building``) uses it too."""

from __future__ import annotations

import json
import sys

from ds01.cli.output import echo


def _size(n: float) -> str:
    from ds01.units import format_size

    return format_size(int(n))


def describe(ev: dict) -> str:
    """One layer event as a line: ``<layer>: Downloading 12.0M/80.0M 5.1M/s ETA 13 s``."""
    text = f"{ev.get('layer')}: {ev.get('status', '')}"
    if ev.get("total"):
        text += f" {_size(ev.get('current', 0))}/{_size(ev['total'])}"
        if ev.get("status") == "Downloading":
            text += f" {_size(ev.get('speed', 0))}/s"
            if ev.get("eta") is not None:
                text += f" ETA {int(ev['eta'])} s"
    return text


def pulled_line(res: dict) -> str:
    if res.get("present"):
        return f"{res.get('image')} is already on this host"
    if res.get("joined"):
        return f"{res.get('image')} pulled (shared with a pull already running; from {res.get('source')})"
    return (f"pulled {res.get('image')} from {res.get('source')}: {_size(res.get('bytes', 0))} "
            f"in {res.get('seconds', 0)} s")


class PullView:
    def __init__(self, tty: bool | None = None, as_json: bool = False):
        self.json = as_json
        self.tty = (sys.stdout.isatty() if tty is None else tty) and not as_json
        self._bars = None
        self._tasks: dict[str, int] = {}

    def event(self, ev: dict) -> None:
        if self.json:
            sys.stdout.write(json.dumps(ev) + "\n")
            sys.stdout.flush()
            return
        if "layer" in ev:
            if self.tty:
                self._bar(ev)
            else:
                echo(describe(ev))
        elif "pulled" in ev:
            self.close()
            echo(pulled_line(ev["pulled"]))
        elif "failed" in ev:
            self.close()
            f = ev["failed"]
            echo(f"failed: {f.get('image')}: {f.get('message')}", err=True)
        elif "line" in ev:
            if self._bars is not None:
                self._bars.console.print(str(ev["line"]))
            else:
                echo(str(ev["line"]))

    def _bar(self, ev: dict) -> None:
        if self._bars is None:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn())
            self._bars.start()
        lid = str(ev["layer"])
        desc = f"{lid} {ev.get('status', '')}"[:40]
        if lid not in self._tasks:
            self._tasks[lid] = self._bars.add_task(desc, total=ev.get("total") or None)
        self._bars.update(self._tasks[lid], description=desc, completed=ev.get("current", 0),
                          total=ev.get("total") or None)

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
            self._tasks.clear()


def pull(ref: str, as_json: bool = False) -> dict:
    """``POST /v1/images-pull`` with the progress shown; returns the ``pulled`` result."""
    from ds01.cli.lazy import Client
    from ds01.client import api

    view, result = PullView(as_json=as_json), {}
    try:
        for ev in api.image_pull(Client(), ref):
            result = ev.get("pulled", result)
            view.event(ev)
    finally:
        view.close()
    return result
