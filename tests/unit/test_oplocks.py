"""The per-project verb lock of ContainerService (services/oplocks.py)."""

from __future__ import annotations

import threading

import pytest

from ds01.errors import Busy
from ds01.services.oplocks import ProjectLocks


def test_hold_is_reentrant_and_try_hold_sees_the_own_thread():
    locks = ProjectLocks(wait=0.1)
    with locks.hold(1, "p"):
        with locks.hold(1, "p"):  # deploy = create + start, each taking the lock again
            with locks.try_hold(1, "p") as free:
                assert free


def test_a_second_thread_waits_then_gets_busy_and_listings_step_aside():
    locks = ProjectLocks(wait=0.2)
    held, done = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def verb():
        with locks.hold(1, "p"):
            held.set()
            done.wait(5)

    t = threading.Thread(target=verb)
    t.start()
    held.wait(5)
    with locks.try_hold(1, "p") as free:
        seen["try"] = free
    with pytest.raises(Busy) as e:
        with locks.hold(1, "p"):
            pass
    assert e.value.exit_code == 13 and "in progress" in e.value.message and e.value.hint
    with locks.hold(1, "q"), locks.hold(2, "p"):  # other projects and other users are not blocked
        pass
    done.set()
    t.join(5)
    assert seen["try"] is False
    with locks.hold(1, "p"):  # free again once the verb ended
        pass
