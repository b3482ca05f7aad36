"""The engine's build output, read once, here: split into lines, each line either a build step
or plain output. Two readers share the splitting:

* :class:`BuildEvents` turns the output into the events the daemon streams to the client, which
  renders them as they are (``ds01.cli.building``; it has no parser of its own)::

      {"step": 8, "of": 17, "text": "RUN pip install …"}   a build step (CA prologue cut)
      {"line": "Collecting six"}                           any other output line

* :class:`BuildLog` follows the current step and the last lines of output, for the failure
  message, and notices a base image's ONBUILD triggers.

Stdlib only and light: the CLI imports it for streams from a daemon older than step events.
"""

from __future__ import annotations

import re

from ds01.errors import BuildFailed
from ds01.images.dockerfile_text import shorten

STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The CA prologue/epilogue every generated RUN carries (see ds01.images.dockerfile): noise in a
# step shown to the user, so it is cut.
CA_NOISE = re.compile(r'set -eu;\s*|if \[ -n "\$\{DS01_CA_PEM:-\}" \]; then .*?; fi;\s*|;?\s*rm -f /tmp/ds01-ca\.pem')
_TRIGGER_RE = re.compile(r"^# Executing \d+ build triggers?")
CUT = "[…] "  # marks a line whose beginning was dropped

TAIL_LINES = 20
MAX_PARTIAL = 4096  # of a line kept for the failure message
DISPLAY_LINE = 64 * 1024  # of one unfinished line kept for the user's screen
MAX_STREAM = 50 * 1024 * 1024  # build output forwarded to the user per build; the rest is dropped


def clean_step(step: str) -> str:
    """``Step 8/17 : RUN set -eu; if [ -n "${DS01_CA_PEM…; fi; pip install …; rm -f …`` →
    ``Step 8/17 : RUN pip install …``."""
    return " ".join(CA_NOISE.sub("", step).split())


def line_event(line: str) -> dict:
    """One output line as an event: ``{"step", "of", "text"}`` for a step line (text as
    :func:`clean_step` leaves it), else ``{"line"}``."""
    m = STEP_RE.match(line)
    if m is None:
        return {"line": line}
    clean = STEP_RE.match(clean_step(line))
    text = clean.group(3) if clean else " ".join(CA_NOISE.sub("", m.group(3)).split())
    return {"step": int(m.group(1)), "of": int(m.group(2)), "text": text}


class LineSplitter:
    """Output chunks → complete lines, ANSI escapes removed and a ``\\r`` before each ``\\n``
    dropped. Linear in the output: an unfinished line is kept to its last ``max_line``
    characters (:data:`CUT` marks the cut), so output without newlines cannot make the daemon
    re-scan an ever-growing string."""

    def __init__(self, max_line: int):
        self.max_line = max_line
        self._partial = ""
        self._cut = False
        self.first_cut = False

    def split(self, text: str) -> list[str]:
        text = ANSI_RE.sub("", text)
        if "\n" not in text:
            self._partial += text[-(self.max_line + 1):]
            if len(self._partial) > self.max_line:
                self._partial, self._cut = self._partial[-self.max_line:], True
            return []
        self.first_cut = self._cut  # the first line returned starts with CUT (not the output's own)
        lines = ((CUT if self._cut else "") + self._partial + text).split("\n")
        self._partial, self._cut = lines.pop(), False
        return [line.rstrip("\r") for line in lines]

    def rest(self) -> list[str]:
        """The unfinished last line, if there is one (taken: the splitter is empty after)."""
        partial = (CUT if self._cut else "") + self._partial
        self._partial, self._cut = "", False
        return [partial] if partial else []


class BuildEvents(LineSplitter):
    """What the daemon streams for one build: :meth:`feed` each piece of output as it comes,
    :meth:`flush` at the end (also before reporting a failure). Past ``limit`` characters of
    output one line says so and the rest is not forwarded (the build goes on)."""

    def __init__(self, limit: int | None = MAX_STREAM):
        super().__init__(DISPLAY_LINE)
        self.limit = limit
        self.sent = 0

    def feed(self, text: str) -> list[dict]:
        if self.limit is not None and self.sent >= self.limit:
            return []
        self.sent += len(text)
        lines = self.split(text)
        if self.limit is not None and self.sent >= self.limit:
            lines += self.split(f"\n[ds01: the build printed more than {self.limit // 2**20} MiB; "
                                "the rest of its output is not shown, the build goes on]\n")
        return [line_event(line) for line in lines]

    def flush(self) -> list[dict]:
        return [line_event(line) for line in self.rest()]


class BuildLog(LineSplitter):
    """Follows the engine's output: the current step and the last lines of output (for the
    failure message), lines cut to their last ``MAX_PARTIAL`` characters."""

    def __init__(self) -> None:
        super().__init__(MAX_PARTIAL)
        self.step: str | None = None
        self.tail: list[str] = []
        self.triggers = False  # the engine ran a base image's ONBUILD triggers

    def feed(self, text: str) -> None:
        lines = self.split(text)
        if len(self._partial) > MAX_PARTIAL:  # kept short at once: only its end can reach the tail
            self._partial, self._cut = self._partial[-MAX_PARTIAL:], True
        for n, line in enumerate(lines):
            if n == 0 and self.first_cut:
                line = CUT + line[len(CUT):][-MAX_PARTIAL:]
            elif len(line) > MAX_PARTIAL:
                line = CUT + line[-MAX_PARTIAL:]
            if STEP_RE.match(line):
                self.step, self.tail = clean_step(line), []
            elif _TRIGGER_RE.match(line):
                self.triggers = True
            elif line.strip() and not line.startswith((" ---> ", "Removing intermediate container")):
                self.tail = (self.tail + [line])[-TAIL_LINES:]

    def failure(self, message: str) -> BuildFailed:
        step = self.step or "(before the first step)"
        m = STEP_RE.match(step)
        short = f"step {m.group(1)}/{m.group(2)} ({shorten(m.group(3), 60)})" if m else step
        # the backend may add why in parentheses (a limit the step reached: runtime/docker.py)
        code = re.search(r"returned a non-zero code: (\d+)(?: \((.*)\))?\s*$", message, re.S)
        why = f"the command exited with code {code.group(1)}" if code else shorten(message, 300)
        if code and code.group(2):
            why += f": {code.group(2)}"
        return BuildFailed(
            f"the build failed at {short}: {why}",
            "the lines above are the step's last output; fix the Dockerfile or requirements and build again "
            "(your previous image, if any, is unchanged)",
            {"step": step, "tail": self.tail, "engine": message},
        )
