"""Build output and the build call, free of click (the fast path of ``image-update P --rebuild``
uses them too; see ``ds01.cli.fast``)."""

from __future__ import annotations

import re
import sys

from ds01.cli.output import colour, echo, ok, print_json
from ds01.cli.lazy import Client, q

STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Same as ds01.services.images.clean_step (not imported: the CLI stays light).
CA_NOISE = re.compile(r'set -eu;\s*|if \[ -n "\$\{DS01_CA_PEM:-\}" \]; then .*?; fi;\s*|;?\s*rm -f /tmp/ds01-ca\.pem')


class Progress:
    """Build output for people. On a terminal: the step lines stay, the newest output line of the
    running step is shown in one line that is rewritten. Elsewhere: every line, as it comes."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.width = 100
        if self.tty:
            import shutil

            self.width = max(20, shutil.get_terminal_size().columns - 1)
        self._partial = ""
        self._status = False

    MAX_LINE = 64 * 1024  # of one unfinished line kept (output without newlines stays linear)

    def feed(self, text: str) -> None:
        text = ANSI_RE.sub("", text)
        if "\n" not in text:
            self._partial += text[-(self.MAX_LINE + 1):]
            if len(self._partial) > self.MAX_LINE:
                self._partial = "[…] " + self._partial[-self.MAX_LINE:]
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line.rstrip("\r"))

    def line(self, line: str) -> None:
        if not self.tty:
            echo(" ".join(CA_NOISE.sub("", line).split()) if STEP_RE.match(line) else line)
            return
        m = STEP_RE.match(line)
        if m:
            line = " ".join(CA_NOISE.sub("", line).split())
            m = STEP_RE.match(line)
            assert m is not None
            self._clear()
            echo(colour(f"[{m.group(1)}/{m.group(2)}] ", "cyan", bold=True) + m.group(3)[: self.width - 10])
        elif line.strip() and not line.startswith((" ---> ", "Removing intermediate", "Successfully built")):
            shown = "  " + line.strip().replace("\t", " ")
            echo("\r\x1b[2K" + colour(shown[: self.width], dim=True), nl=False)
            self._status = True

    def _clear(self) -> None:
        if self._status:
            echo("\r\x1b[2K", nl=False)
            self._status = False

    def close(self) -> None:
        if self._partial:
            self.line(self._partial)
            self._partial = ""
        self._clear()


def build(project: str, *, no_cache: bool = False, user: str | None = None, as_json: bool = False) -> dict:
    """Ask the daemon to build and show its log; returns the result. A failed build prints the
    failing step and its last output lines, then raises BuildFailed (exit code 11)."""
    from ds01.errors import BuildFailed

    progress = None if as_json else Progress()
    result: dict = {}
    try:
        for item in Client().stream("POST", f"/v1/images/{q(project)}/build", {"no_cache": no_cache, "user": user}):
            if "stream" in item and progress:
                progress.feed(str(item["stream"]))
            elif "result" in item:
                result = item["result"]
    except BuildFailed as e:
        if progress:
            progress.close()
        show_failure(e)
        raise
    finally:
        if progress:
            progress.close()
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
    echo(f"  next: container-create {project} --image {res['image']}   (then container-run {project})")


