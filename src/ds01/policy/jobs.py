"""Pure decisions about batch jobs (issue 14): states and transitions, ``--array`` / ``--time`` /
``--env`` parsing, dependencies, array throttles and how a job's end is classified.

A job is ``queued`` until it may start (dependencies succeeded, its array's ``%N`` and the
user's ``max_jobs_running`` allow it, and for GPU jobs the fair queue serves it), ``starting``
while the daemon creates its container, ``running`` until the container exits, and then one of
the end states, each with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from ds01.errors import InvalidInput
from ds01.units import format_duration, parse_duration

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
SUCCEEDED, FAILED, TIMEOUT, CANCELLED, LOST = "succeeded", "failed", "timeout", "cancelled", "lost"
STATES = (QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, TIMEOUT, CANCELLED, LOST)
ACTIVE = (QUEUED, STARTING, RUNNING)
ENDED = (SUCCEEDED, FAILED, TIMEOUT, CANCELLED, LOST)

# Every allowed step. ``starting -> queued`` is the daemon dying mid-start (nothing ran yet);
# ``running -> queued`` is a lost job with ``--requeue``.
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({STARTING, FAILED, CANCELLED}),
    STARTING: frozenset({RUNNING, QUEUED, FAILED, CANCELLED, LOST}),
    RUNNING: frozenset({SUCCEEDED, FAILED, TIMEOUT, CANCELLED, LOST, QUEUED}),
    **{s: frozenset() for s in ENDED},
}

MAX_ARRAY_INDEX = 1_000_000
# A full image id (what job-submit sends after building; prefixes would match anyone's image)
IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")
# Environment keys a job may not set: identity, the workspace and the GPU hand-off are the daemon's.
RESERVED_ENV = frozenset({"HOME", "USER", "LOGNAME", "CUDA_VISIBLE_DEVICES"})
RESERVED_ENV_PREFIXES = ("NVIDIA_", "DS01_")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_ENV = 64
MAX_ENV_VALUE = 4096
MAX_COMMAND_BYTES = 64 * 1024


class BadTransition(ValueError):
    """A state change the job state machine does not allow (a bug or a lost race)."""


def can_transition(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def transition(old: str, new: str) -> str:
    """``new`` if the step is allowed, else :class:`BadTransition`."""
    if not can_transition(old, new):
        raise BadTransition(f"a job cannot go from {old!r} to {new!r}")
    return new


@dataclass(frozen=True)
class ArraySpec:
    """The task indices of ``--array`` and its ``%N`` (None: no throttle)."""

    indices: tuple[int, ...]
    throttle: int | None = None


_RANGE = re.compile(r"(\d+)(?:-(\d+))?\Z")


def parse_array(text: str, max_tasks: int) -> ArraySpec:
    """``0-9``, ``0-9%2``, ``1,3,5-7%1``: sorted distinct indices, at most ``max_tasks``."""
    hint = "use e.g. --array 0-9 (ten tasks) or --array 0-9%2 (at most two running at once)"
    body, sep, thr = text.strip().partition("%")
    throttle = None
    if sep:
        if not thr.isdigit() or int(thr) < 1:
            raise InvalidInput(f"--array {text!r}: the part after % is how many run at once (1 or more)", hint)
        throttle = int(thr)
    out: set[int] = set()
    for part in body.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise InvalidInput(f"--array {text!r} is not a list of indices or ranges", hint)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InvalidInput(f"--array {text!r}: the range {lo}-{hi} is empty", hint)
        if hi > MAX_ARRAY_INDEX or hi - lo + 1 > max_tasks:  # bounds the set built here
            raise InvalidInput(f"--array {text!r} has more than {max_tasks} tasks (the limit)",
                               "split the work into fewer, larger tasks")
        out.update(range(lo, hi + 1))
    if len(out) > max_tasks:
        raise InvalidInput(f"--array {text!r} has more than {max_tasks} tasks (the limit)",
                           "split the work into fewer, larger tasks")
    return ArraySpec(tuple(sorted(out)), throttle)


def parse_time(text: str | float | None, max_runtime: float) -> float | None:
    """``--time``: seconds; defaults to and is capped by ``max_runtime`` (0 = no cap, and then
    no default either: None, the job runs until it ends)."""
    if text is None or text == "":
        return max_runtime or None
    try:
        secs = parse_duration(text)
    except ValueError as e:
        raise InvalidInput(f"--time: {e}") from None
    if secs <= 0:
        raise InvalidInput("--time must be longer than 0", "use e.g. --time 30m or --time 4h")
    if max_runtime and secs > max_runtime + 1e-9:
        raise InvalidInput(f"--time {text} is over your max runtime of {format_duration(max_runtime)}",
                           f"ask for at most --time {format_duration(max_runtime)} ('check-limits' shows it)")
    return secs


def parse_env(items: Iterable[str] | Mapping[str, str]) -> dict[str, str]:
    """``--env K=V``: valid names, bounded sizes, never one of the daemon's own variables."""
    pairs = list(items.items()) if isinstance(items, Mapping) else [_split_env(i) for i in items]
    if len(pairs) > MAX_ENV:
        raise InvalidInput(f"at most {MAX_ENV} --env variables")
    out: dict[str, str] = {}
    for k, v in pairs:
        if not _ENV_KEY.match(k):
            raise InvalidInput(f"--env: {k!r} is not a variable name", "use NAME=value, NAME of letters, digits, _")
        if k in RESERVED_ENV or k.startswith(RESERVED_ENV_PREFIXES):
            raise InvalidInput(f"--env: {k} is set by DS01 and cannot be changed",
                               "GPUs are chosen with --gpus/--gpu-profile/--mig")
        if len(v) > MAX_ENV_VALUE or "\0" in v:
            raise InvalidInput(f"--env: the value of {k} is too long or has a NUL byte")
        out[k] = v
    return out


def _split_env(item: str) -> tuple[str, str]:
    k, sep, v = item.partition("=")
    if not sep:
        raise InvalidInput(f"--env {item!r} is not NAME=value")
    return k, v


def check_command(cmd: Iterable[str]) -> tuple[str, ...]:
    """The command: at least one word, no NUL bytes, bounded size."""
    words = tuple(cmd)
    if not words or not words[0]:
        raise InvalidInput("the job has no command", "put it after --: job-submit PROJECT -- python train.py")
    if any(not isinstance(w, str) or "\0" in w for w in words):
        raise InvalidInput("the command's words must be text without NUL bytes")
    if sum(len(w.encode()) + 1 for w in words) > MAX_COMMAND_BYTES:
        raise InvalidInput(f"the command is longer than {MAX_COMMAND_BYTES // 1024} KiB",
                           "put long commands in a script in the workspace")
    return words


def dependencies(dep_states: Mapping[int, str]) -> tuple[str, str | None]:
    """``("ready", None)`` when every dependency succeeded, ``("wait", None)`` while any is
    active, ``("fail", reason)`` as soon as one ended otherwise (the dependent can never run)."""
    for jid in sorted(dep_states):
        st = dep_states[jid]
        if st in ENDED and st != SUCCEEDED:
            return "fail", f"dependency failed: job {jid} {st}"
    if all(st == SUCCEEDED for st in dep_states.values()):
        return "ready", None
    return "wait", None


def throttle_allows(active_in_array: int, throttle: int | None) -> bool:
    """Whether one more task of an array may start (``active``: starting or running)."""
    return throttle is None or active_in_array < throttle


def under_running_limit(running: int, max_jobs_running: int) -> bool:
    return running < max_jobs_running


def end_of(exit_code: int | None, *, requested: str | None, container_gone: bool = False,
           engine_restarted: bool = False, requeue: bool = False) -> tuple[str, str]:
    """How a job that stopped running ended: (state, reason).

    ``requested`` is what the daemon asked for (``"cancel"`` / ``"timeout"``), else None. The
    daemon's own request wins (a cancelled job that then exits 0 is still cancelled); an engine
    restart or a vanished container is ``lost`` (``queued`` again with ``--requeue``).
    """
    if requested == "cancel":
        return CANCELLED, "cancelled by its owner" + (f" (exit code {exit_code})" if exit_code is not None else "")
    if requested == "timeout":
        return TIMEOUT, "time limit reached" + (f" ({describe_exit(exit_code)})" if exit_code is not None else "")
    if container_gone or engine_restarted:
        why = "the container engine restarted" if engine_restarted else "its container disappeared"
        return (QUEUED, why + "; requeued") if requeue else (LOST, why)
    if exit_code == 0:
        return SUCCEEDED, "exit code 0"
    return FAILED, describe_exit(exit_code)


_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code > 128 and code - 128 in _SIGNALS:
        return f"exit code {code} (killed by {_SIGNALS[code - 128]}{', out of memory?' if code == 137 else ''})"
    return f"exit code {code}"


def timed_out(started_at: float | None, time_limit: float | None, now: float) -> bool:
    return bool(started_at and time_limit and now >= started_at + time_limit)


def job_container_name(prefix: str, uid: int, job_id: int) -> str:
    """``<prefix>-<uid>-J<id>``: the capital J cannot occur in a project name (lowercase only),
    so a job's container never collides with a project's."""
    return f"{prefix}-{uid}-J{job_id}"


def job_spec(base, *, job_id: int, prefix: str, uid: int, command: tuple[str, ...], env: Mapping[str, str],
             array_id: int | None = None, array_index: int | None = None, image: str | None = None):
    """A job's container: ``base`` (``policy.containers.build_spec`` of the project, so every
    security option is the containers' own) with the job's name, label, command and variables.
    The user's ``env`` was checked by :func:`parse_env` and never overrides the daemon's."""
    from dataclasses import replace

    from ds01 import labels as keys

    extra = {"DS01_JOB_ID": str(job_id)}
    if array_index is not None:
        extra["DS01_ARRAY_TASK_ID"] = str(array_index)
        extra["DS01_ARRAY_JOB_ID"] = str(array_id if array_id is not None else job_id)
    return replace(
        base,
        name=job_container_name(prefix, uid, job_id),
        labels={**base.labels, keys.JOB: str(job_id)},
        env={**dict(env), **base.env, **extra},
        command=tuple(command),
        hostname=f"job-{job_id}",
        image=image or base.image,
    )
