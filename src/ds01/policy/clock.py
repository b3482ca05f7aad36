"""DS01's time for deadlines that survive a restart (issue 16): the wall clock, except that a
step of it (an NTP correction, an admin's ``date -s``, a wrong RTC at boot) is neither counted as
idle, held or running time nor taken back: it becomes a slew of at most ``SLEW`` (1 %) of the
time that really passed, measured by the boot-time clock. Pure: the caller reads the clocks.

* Within a daemon's life: :func:`advance` from the previous reading.
* A step over ``MAX_STEP`` (a day: a clock being set, e.g. a dead RTC at boot) is followed at once
  (and counts): lagging the wall clock for months would make every record's time meaningless.
* Across a restart: the last :class:`Mark` (DS01 time, boot-time clock, boot id) is persisted;
  :func:`resume` continues from it on the same boot (the elapsed time is known exactly), and
  after a reboot takes the wall clock, never earlier than the mark.
"""

from __future__ import annotations

from dataclasses import dataclass

TOLERANCE = 2.0  # seconds of disagreement that are followed at once (ordinary NTP slewing)
SLEW = 0.01  # beyond it, DS01 time converges on the wall clock by at most 1 % of elapsed time
MAX_STEP = 86400.0  # beyond this, the wall clock is taken as it is


@dataclass(frozen=True)
class Mark:
    now: float  # DS01 time (seconds since the epoch)
    mono: float  # the boot-time clock at that moment
    boot: str  # the kernel's boot id


def advance(prev_now: float, prev_mono: float, wall: float, mono: float, tolerance: float = TOLERANCE,
            slew: float = SLEW, max_step: float = MAX_STEP) -> float:
    """DS01 time now, from the previous reading (``prev_now`` at ``prev_mono``). Never earlier
    than ``prev_now``; equal to ``wall`` while the two agree within ``tolerance``."""
    dm = max(0.0, mono - prev_mono)
    base = prev_now + dm
    err = wall - base
    if abs(err) > max_step:
        return wall
    now = wall if abs(err) <= tolerance else base + max(-slew * dm, min(slew * dm, err))
    return max(prev_now, now)


def resume(mark: Mark | None, wall: float, mono: float, boot: str, max_step: float = MAX_STEP) -> float:
    """DS01 time at start-up, continuing the last persisted ``mark``."""
    if mark is None:
        return wall
    if boot == mark.boot and mono >= mark.mono:
        now = mark.now + (mono - mark.mono)  # a step while we were down does not count
    else:
        now = max(wall, mark.now)  # rebooted: the elapsed time is unknown; never go back
    return wall if abs(wall - now) > max_step else now
