"""A cgroup that caps the processes of one build (the classic builder's ``cgroupparent``).

The engine's /build API takes memory and CPU limits for each step's container but no pids limit,
capabilities or security options. Every step's container is made a child of the cgroup given as
``cgroupparent``; this module creates that parent with ``pids.max`` set first, so all steps of
the build together can never hold more processes than the user's containers may.

Works for the engine's ``cgroupfs`` driver (cgroup v1 and v2). Under the ``systemd`` driver the
parent must be a systemd slice, whose pids limit systemd owns: :func:`open_build_cgroup` then
returns None and the build runs without the pids cap (logged).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading

log = logging.getLogger("ds01d")

CGROUP_ROOT = "/sys/fs/cgroup"
PREFIX = "ds01-build-"
# Groups of builds in progress in this process: empty between two steps, yet never swept (runc
# would make a swept one again, without pids.max).
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


class BuildCgroup:
    """One build's parent cgroup: ``parent`` for the API, ``pids_exceeded()`` after a failure,
    ``close()`` removes it (from every controller: runc creates it in all of them)."""

    def __init__(self, root: str, name: str, version: str, pids: int):
        self.root, self.name, self.version, self.pids = root, name, version, pids
        self.parent = "/" + name

    def _pids_dir(self) -> str:
        return os.path.join(self.root, "pids", self.name) if self.version == "1" else os.path.join(self.root, self.name)

    def create(self) -> None:
        d = self._pids_dir()
        os.mkdir(d, 0o755)
        with open(os.path.join(d, "pids.max"), "w") as f:
            f.write(str(int(self.pids)))

    def pids_exceeded(self) -> bool:
        """Whether a fork in the build was refused by the cap: the group's peak reached it (v1
        counts the refusal in pids.events of the step's own, already removed, group), or its
        pids.events counted one (v2, hierarchical)."""
        d = self._pids_dir()
        try:
            with open(os.path.join(d, "pids.peak")) as f:
                if int(f.read().strip() or 0) >= self.pids:
                    return True
        except (OSError, ValueError):
            pass
        try:
            with open(os.path.join(d, "pids.events")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "max" and int(value or 0) > 0:
                        return True
        except (OSError, ValueError):
            pass
        return False

    def close(self, retries: int = 20, every: float = 3.0) -> None:
        """Remove the group; while the engine still tears a step down (a cancelled or timed-out
        build), try again in the background for a minute, then leave it to :func:`sweep`."""
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self.name)
        if remove_group(self.root, self.name, self.version) or retries <= 0:
            return

        def again(left: int) -> None:
            if not remove_group(self.root, self.name, self.version) and left > 1:
                _later(every, again, left - 1)

        _later(every, again, retries)


def _later(delay: float, fn, *args) -> None:
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()


def remove_group(root: str, name: str, version: str) -> bool:
    """rmdir the group everywhere it exists; True when it is gone (a group with processes or
    children left, e.g. a step still being torn down, stays and is swept later)."""
    dirs = [os.path.join(root, name)] if version != "1" else \
        [os.path.join(root, c, name) for c in _controllers(root)]
    ok = True
    for d in dirs:
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    return ok


def _controllers(root: str) -> list[str]:
    try:
        return [c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)) and not os.path.islink(os.path.join(root, c))]
    except OSError:
        return []


def sweep(root: str, instance: str, version: str) -> int:
    """Remove this instance's leftover build groups (a daemon killed mid-build); never another
    instance's. Returns how many were removed."""
    stem = f"{PREFIX}{instance}-"
    base = os.path.join(root, "pids") if version == "1" else root
    try:
        names = [n for n in os.listdir(base) if n.startswith(stem)]
    except OSError:
        return 0
    with _ACTIVE_LOCK:
        names = [n for n in names if n not in _ACTIVE]
    return sum(1 for n in names if remove_group(root, n, version))


def open_build_cgroup(driver: str, version: str, instance: str, pids: int,
                      root: str = CGROUP_ROOT) -> BuildCgroup | None:
    """A new capped parent group for one build, or None where this engine cannot take one
    (systemd driver, no pids controller, not root: logged, the build runs without the cap)."""
    if driver != "cgroupfs" or version not in ("1", "2"):
        log.warning("builds run without a pids cap: the engine's cgroup driver is %r (only cgroupfs is supported)",
                    driver)
        return None
    sweep(root, instance, version)
    cg = BuildCgroup(root, f"{PREFIX}{instance}-{secrets.token_hex(4)}", version, pids)
    with _ACTIVE_LOCK:
        _ACTIVE.add(cg.name)
    try:
        cg.create()
    except OSError as e:
        log.warning("builds run without a pids cap: could not create %s (%s)", cg._pids_dir(), e)
        cg.close()
        return None
    return cg
