"""Build output and the build call, free of click (the fast path of ``image-update P --rebuild``
uses them too; see ``ds01.cli.fast``)."""

from __future__ import annotations

import sys

from ds01.cli.output import colour, echo, ok, print_json
from ds01.cli.lazy import Client
from ds01.client import api

# Lines a terminal does not show: the engine's own bookkeeping between steps.
QUIET = (" ---> ", "Removing intermediate", "Successfully built")


class Progress:
    """Build output for people, from the daemon's events (``ds01.images.buildlog``: it parses
    the engine's output, this only renders). On a terminal: the step lines stay, the newest
    output line of the running step is shown in one line that is rewritten. Elsewhere: every
    line, as it comes."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.width = 100
        if self.tty:
            import shutil

            self.width = max(20, shutil.get_terminal_size().columns - 1)
        self._raw = None  # parser for raw output (feed)
        self._status = False
        self._pull = None  # cli.pulling.PullView while a base image is pulled

    def event(self, ev: dict) -> None:
        """One event: ``{"step": n, "of": m, "text": …}`` or ``{"line": …}`` (others are ignored)."""
        if "step" in ev:
            self.step(int(ev["step"]), int(ev["of"]), str(ev.get("text", "")))
        elif "layer" in ev or "pulled" in ev:  # the base image being pulled (issue 17)
            if self._pull is None:
                from ds01.cli.pulling import PullView

                self._clear()
                self._pull = PullView(tty=self.tty)
            self._pull.event(ev)
            if "pulled" in ev:
                self._pull = None
        elif "line" in ev:
            self.line(str(ev["line"]))

    def feed(self, text: str) -> None:
        """Raw build output, as a daemon from before step events streamed it: parsed into events
        by the daemon's own parser."""
        if self._raw is None:
            from ds01.images.buildlog import BuildEvents

            self._raw = BuildEvents(limit=None)
        for ev in self._raw.feed(text):
            self.event(ev)

    def step(self, n: int, of: int, text: str) -> None:
        if not self.tty:
            echo(f"Step {n}/{of} : {text}".rstrip())
            return
        self._clear()
        echo(colour(f"[{n}/{of}] ", "cyan", bold=True) + text[: self.width - 10])

    def line(self, line: str) -> None:
        if not self.tty:
            echo(line)
        elif line.strip() and not line.startswith(QUIET):
            shown = "  " + line.strip().replace("\t", " ")
            echo("\r\x1b[2K" + colour(shown[: self.width], dim=True), nl=False)
            self._status = True

    def _clear(self) -> None:
        if self._status:
            echo("\r\x1b[2K", nl=False)
            self._status = False

    def close(self) -> None:
        if self._pull is not None:
            self._pull.close()
        if self._raw is not None:
            for ev in self._raw.flush():
                self.event(ev)
        self._clear()


def build(project: str, *, no_cache: bool = False, user: str | None = None, as_json: bool = False) -> dict:
    """Ask the daemon to build and show its log; returns the result. A failed build prints the
    failing step and its last output lines, then raises BuildFailed (exit code 11)."""
    from ds01.errors import BuildFailed

    progress = None if as_json else Progress()
    result: dict = {}
    try:
        for item in api.image_build(Client(), project, no_cache=no_cache, user=user):
            if "result" in item:
                result = item["result"]
            elif progress is None:
                continue
            elif "stream" in item:
                progress.feed(str(item["stream"]))
            else:
                progress.event(item)
    except BuildFailed as e:
        if progress:
            progress.close()
        show_failure(e)
        raise
    finally:
        if progress:
            progress.close()
    if not result:  # the stream ended without its result line: the daemon went away mid-build
        from ds01.errors import DaemonUnavailable

        raise DaemonUnavailable("the connection to the DS01 daemon ended before the build finished",
                                "run the command again: a build that completed is reused at once")
    if user is None and project in (result.get("outdated") or ()):
        from ds01.projects.stamps import mark_recheck

        mark_recheck(project)  # the next project-launch must not reuse that container unasked
    return result


def show_failure(e) -> None:
    step, tail = e.details.get("step"), e.details.get("tail") or []
    if step:
        echo(colour(f"build failed at {step}", "red", err=True, bold=True), err=True)
    if tail:
        echo(f"── last {len(tail)} lines of its output ──", err=True)
        for line in tail:
            echo("  " + line, err=True)


def report_built(project: str, res: dict, as_json: bool) -> None:
    if as_json:
        return print_json(res)
    from ds01.units import format_size

    if res.get("up_to_date"):
        ok(f"image {res['image']} is up to date (nothing changed)")
    else:
        ok(f"built {res['image']} ({format_size(res.get('size', 0))}) in {res.get('seconds', 0):.1f} s")
    echo("  next: " + next_after_build(project, res))


def next_after_build(project: str, res: dict) -> str:
    """The command to run after a build: one that uses the new image, also when the project
    already has a container (which a create would refuse)."""
    if project in (res.get("outdated") or ()):
        return (f"project-launch {project} --yes   (your container of {project} runs the previous image: "
                "this replaces it, the workspace is kept)")
    if project in (res.get("used_by") or ()):
        return f"container-run {project}   (your container of {project} already has this image)"
    return f"project-launch {project}   (or container-create {project} --image {res['image']})"



