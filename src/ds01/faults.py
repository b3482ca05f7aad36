"""Fault injection for the fault tests (issue 16): ``DS01_FAULT=NAME`` in ds01d's environment
kills the daemon with SIGKILL when it reaches ``point(NAME)``: a crash at an exact moment, so a
test can check what a restart makes of it. Unset (always, in production), a point is a no-op."""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("DS01_FAULT") or None


def point(name: str) -> None:
    if _ARMED == name:
        os.kill(os.getpid(), signal.SIGKILL)
