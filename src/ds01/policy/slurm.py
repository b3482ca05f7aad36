"""Cluster mode on Slurm (issue 18), the pure half: Slurm's text formats in, sbatch arguments and
the policy→Slurm mapping out. No subprocess, no I/O: the placement and the node agent run the
commands and hand their output here.

Formats are Slurm 22.05's (Debian ``slurm-wlm``): ``scontrol show job -d -o``, ``scontrol show
node -o``, ``scontrol show config``, ``sbatch --parsable``.

``scontrol``'s ``Key=Value`` text is ambiguous when a value holds `` Key=`` (a job name with spaces
can imitate a later field). The parser therefore refuses a record in which a field it relies on
appears twice, and the names DS01 gives its jobs (``job_name``) never contain spaces. The node
agent acts only for job ids the head names in an authenticated request.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ds01.models.config import Config, Limits
from ds01.models.gpu import GpuRequest
from ds01.policy.limits import effective_limits

LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                         "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"})
RUNNING_STATES = frozenset({"RUNNING", "CONFIGURING"})
UNUSABLE_NODE_STATES = frozenset({"DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING",
                                  "NOT_RESPONDING", "FUTURE", "INVALID_REG"})
_NO_VALUE = frozenset({"", "(null)", "none", "unknown", "n/a", "unlimited", "infinite", "partition_limit"})

# A token that starts a field: Slurm keys are letters, digits and ``_/:`` (``AllocNode:Sid``,
# ``CPUs/Task``, ``ReqB:S:C:T``). Anything else continues the previous field's value.
_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_/:]*)=(.*)\Z", re.S)
# Fields a decision rests on: one of these twice in a record means a value imitated a field.
_JOB_UNIQUE = ("JobId", "JobName", "UserId", "JobState", "Reason", "Partition", "NodeList",
               "StartTime", "TimeLimit")
_NODE_UNIQUE = ("NodeName", "State", "NodeAddr", "Gres", "Reason")


def _fields(record: str, unique: tuple[str, ...]) -> dict[str, list[str]]:
    """``Key=Value`` fields of one record (one ``-o`` line, or a multi-line record), every value
    of a repeated key kept in order."""
    out: dict[str, list[str]] = {}
    key: str | None = None
    for tok in record.split():
        m = _KEY.match(tok)
        if m:
            key = m.group(1)
            out.setdefault(key, []).append(m.group(2))
        elif key is not None:
            out[key][-1] += " " + tok
    twice = [k for k in unique if len(out.get(k, ())) > 1]
    if twice:
        raise ValueError(f"ambiguous Slurm record: {', '.join(twice)} appear(s) more than once")
    return out


def _one(f: Mapping[str, list[str]], key: str) -> str | None:
    v = f.get(key)
    return v[0] if v else None


def _absent(v: str | None) -> bool:
    return v is None or v.strip().lower() in _NO_VALUE


# -- durations ----------------------------------------------------------------------------------


def slurm_time(seconds: float | None) -> str:
    """A time limit for ``--time``/``MaxWall``: ``"D-HH:MM:SS"``, rounded UP to whole minutes
    (Slurm keeps time limits in minutes; rounding down would cut a job short). None, <= 0 or
    infinite -> ``"UNLIMITED"``."""
    if seconds is not None and math.isnan(seconds):
        raise ValueError("a time limit cannot be NaN")
    if seconds is None or seconds <= 0 or math.isinf(seconds):
        return "UNLIMITED"
    minutes = -(-math.ceil(seconds) // 60)  # integer ceil: float division could round down
    d, rem = divmod(minutes * 60, 86400)
    return f"{d}-{rem // 3600:02d}:{rem % 3600 // 60:02d}:00"


def slurm_duration(seconds: float) -> str:
    """A duration exactly as ``scontrol show config`` prints it (Slurm's ``secs2time_str``):
    ``"7-00:00:00"``, ``"01:00:00"``; whole seconds, at least 1. Used for slurm.conf keys kept in
    seconds (``PriorityDecayHalfLife``, ``PriorityMaxAge``), so the sync diff compares equal text."""
    s = max(1, int(round(seconds)))
    d, rem = divmod(s, 86400)
    hms = f"{rem // 3600:02d}:{rem % 3600 // 60:02d}:{rem % 60:02d}"
    return f"{d}-{hms}" if d else hms


_DURATION = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z")


def parse_duration(text: str | None) -> int | None:
    """Seconds of a Slurm duration: ``"1-02:03:04"``, ``"02:03:04"``, ``"30:00"`` (MM:SS), ``"5"``
    (minutes), ``"2-12"`` (days-hours), ``"2-12:30"``; ``UNLIMITED``/``INFINITE``/``NONE``/
    ``Partition_Limit`` -> None. ValueError for anything else."""
    if _absent(text):
        return None
    m = _DURATION.match(text.strip())  # type: ignore[union-attr]
    if not m:
        raise ValueError(f"{text!r} is not a Slurm duration (e.g. '1-02:03:04' or 'UNLIMITED')")
    days, a, b, c = m.groups()
    n = [int(x) for x in (a, b, c) if x is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        h, mi, s = (n + [0, 0])[:3]
    elif len(n) == 3:
        h, mi, s = n
    elif len(n) == 2:  # minutes:seconds
        h, mi, s = 0, n[0], n[1]
    else:  # minutes
        h, mi, s = 0, n[0], 0
    return int(days or 0) * 86400 + h * 3600 + mi * 60 + s


def _epoch(text: str | None) -> float | None:
    """``StartTime=2026-12-01T11:00:00`` (the controller's local time) -> epoch seconds."""
    if _absent(text):
        return None
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))  # type: ignore[union-attr]
    except (ValueError, OverflowError):
        return None


# -- GRES ---------------------------------------------------------------------------------------


def parse_indices(idx: str) -> tuple[int, ...]:
    """``"0-1,3"`` -> ``(0, 1, 3)``, sorted and without repeats. ValueError for anything else."""
    out: set[int] = set()
    for part in idx.strip().split(","):
        a, sep, b = part.strip().partition("-")
        if not a.isdigit() or (sep and not b.isdigit()) or (not sep and b):
            raise ValueError(f"{idx!r} is not a list of device indices (e.g. '0-1,3')")
        lo, hi = int(a), int(b) if sep else int(a)
        if hi < lo or hi - lo > 4096:
            raise ValueError(f"{idx!r}: bad index range {part.strip()!r}")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


# ``gpu:h200:2(IDX:0-1)``, ``gpu:2(IDX:0,2)``, older ``gpu:h200(IDX:0)``; the type may be a MIG
# profile (``gpu:1g.18gb:1(IDX:3)``).
_GRES_IDX = re.compile(r"(?:^|,)gpu(?::([^:(),\s]+))?(?::(\d+))?\(IDX:([^)]*)\)")
# ``gpu:h200:1`` (JOB_GRES), ``gres:gpu:h200:1`` (TresPerNode), ``gres/gpu:h200=1`` (TRES)
_GRES_TYPED = re.compile(r"(?:^|[,:/])gpu:([A-Za-z0-9_.+-]+?)[:=]\d+")
_GRES_TYPE_OK = re.compile(r"[A-Za-z0-9_.+-]{1,64}\Z")


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses (``gpu:h200:2(S:0-1),gpu:1g.18gb:4``)."""
    return [p.strip() for p in re.split(r",(?![^()]*\))", text) if p.strip()]


def _job_gres(f: Mapping[str, list[str]]) -> tuple[str | None, tuple[int, ...]]:
    """(GRES type, device indices) of a job: indices from the ``-d`` detail (``GRES=`` in 20.11+,
    ``GRES_IDX=`` before), the type from there or from what was requested."""
    gtype: str | None = None
    idx: set[int] = set()
    for v in [*f.get("GRES", ()), *f.get("GRES_IDX", ())]:
        for t, _n, ix in _GRES_IDX.findall(v):
            if t and not t.isdigit():  # "gpu:2(IDX:…)": the 2 is a count, not a type
                gtype = gtype or t
            try:
                idx.update(parse_indices(ix))
            except ValueError:
                pass  # "IDX:N/A": nothing bound yet
    if gtype is None:
        for key in ("JOB_GRES", "TresPerNode", "TresPerJob", "AllocTRES", "TRES", "ReqTRES"):
            m = _GRES_TYPED.search(_one(f, key) or "")
            if m and not m.group(1).isdigit():
                gtype = m.group(1)
                break
    return gtype, tuple(sorted(idx))


# -- jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmJob:
    """One job as ``scontrol show job -d -o`` shows it."""

    id: int
    name: str
    user_id: int
    state: str
    reason: str | None
    node: str | None
    gres_type: str | None
    gpu_indices: tuple[int, ...]
    start_time: float | None  # for a pending job: Slurm's estimate, if it has one
    time_limit_s: int | None
    partition: str

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


_UID = re.compile(r"\((\d+)\)\s*\Z")


def parse_job(line: str) -> SlurmJob:
    """One record of ``scontrol show job -d -o <id>``. ValueError (and nothing else) when it is
    not one: no ``JobId``, no ``UserId``/``JobState``, or an ambiguous record."""
    if not isinstance(line, str):
        raise ValueError("a Slurm job record is text")
    f = _fields(line, _JOB_UNIQUE)
    jid, user, state = _one(f, "JobId"), _one(f, "UserId"), _one(f, "JobState")
    if jid is None or not jid.strip().isdigit():
        raise ValueError(f"not a Slurm job record (no numeric JobId): {line.strip()[:80]!r}")
    m = _UID.search(user or "")
    if m is None:
        raise ValueError(f"Slurm job {jid}: no UserId=name(uid) in the record")
    if not state or not state.strip():
        raise ValueError(f"Slurm job {jid}: no JobState in the record")
    reason = _one(f, "Reason")
    node = next((n for n in f.get("Nodes", ()) if not _absent(n)), None) or _one(f, "NodeList")
    gtype, idx = _job_gres(f)
    try:
        limit = parse_duration(_one(f, "TimeLimit"))
    except ValueError:
        limit = None
    return SlurmJob(
        id=int(jid),
        name=(_one(f, "JobName") or "").strip(),
        user_id=int(m.group(1)),
        state=state.strip().split()[0].upper(),
        reason=None if _absent(reason) else reason.strip(),  # type: ignore[union-attr]
        node=None if _absent(node) else node.strip(),  # type: ignore[union-attr]
        gres_type=gtype,
        gpu_indices=idx,
        start_time=_epoch(_one(f, "StartTime")),
        time_limit_s=limit,
        partition=(_one(f, "Partition") or "").strip(),
    )


_NO_JOBS = ("no jobs in the system", "invalid job id specified")


def _records(text: str, first_key: str) -> list[str]:
    """Records of ``scontrol show ...`` text: a record starts at a ``<first_key>=`` line and runs
    to the next one (``-o``: one line; without it, indented lines follow). Any other line after
    a record continues it (a value with a newline), so it can only make that record ambiguous."""
    recs: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(first_key + "="):
            recs.append(line)
        elif recs:
            recs[-1] += " " + line
        else:
            raise ValueError(f"not a Slurm record (expected {first_key}=…): {line[:80]!r}")
    return recs


def parse_jobs(text: str) -> list[SlurmJob]:
    """Every job of ``scontrol show job -d -o``. "No jobs in the system" and "Invalid job id
    specified" -> []. A record whose fields are ambiguous is skipped: it is not a job DS01
    submitted (DS01 names have no spaces), and one user's odd job name must not blind the head."""
    low = text.strip().lower()
    if not low or any(s in low for s in _NO_JOBS) and "jobid=" not in low:
        return []
    out: list[SlurmJob] = []
    for rec in _records(text, "JobId"):
        try:
            out.append(parse_job(rec))
        except ValueError as e:
            if not str(e).startswith("ambiguous"):
                raise
    ids = [j.id for j in out]
    if len(set(ids)) != len(ids):  # a value with a newline imitated a whole record
        raise ValueError(f"ambiguous Slurm listing: job {next(i for i in ids if ids.count(i) > 1)} appears twice")
    return out


# -- names --------------------------------------------------------------------------------------

_JOB_NAME = re.compile(r"ds01-([a-z0-9][a-z0-9_.-]{0,31}?)-u(\d+)-([a-z0-9][a-z0-9_.-]{0,62})\Z")


def job_name(instance: str, uid: int, project: str) -> str:
    """``ds01-<instance>-u<uid>-<project>``: what the head names a container's Slurm job. Raises
    ValueError when the parts would not read back the same (``parse_job_name``)."""
    name = f"ds01-{instance}-u{uid}-{project}"
    if isinstance(uid, bool) or parse_job_name(name) != (instance, uid, project):
        raise ValueError(f"cannot name a Slurm job for instance {instance!r}, uid {uid!r}, project {project!r}")
    return name


def parse_job_name(name: str) -> tuple[str, int, str] | None:
    """(instance, uid, project) of a DS01 job name; None for any other job."""
    m = _JOB_NAME.match(name) if isinstance(name, str) else None
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


# -- submission ---------------------------------------------------------------------------------


def gres_for(request: GpuRequest, gres_type: str | None, mig_types: Mapping[str, str]) -> str | None:
    """``--gres`` for a DS01 GPU request: ``gpu:N`` / ``gpu:<type>:N`` for whole GPUs, ``gpu:<slurm
    type>:1`` for a MIG profile (``mig_types`` maps DS01 profile -> Slurm GRES type); None for no
    GPU. A ``--mig N`` request (any profiles) has no Slurm form: Slurm allocates by type."""
    kind = request.kind
    if kind == "none":
        return None
    if kind == "conflict":
        raise ValueError("conflicting GPU options: ask for either --gpus or a MIG profile")
    if kind == "mig":
        raise ValueError("--mig N (any MIG profile) has no Slurm form: name a profile in cluster mode")
    if kind == "profile":
        slurm_type = mig_types.get(request.profile) if isinstance(request.profile, str) else None
        if slurm_type is None:
            known = ", ".join(sorted(mig_types)) or "none configured"
            raise ValueError(f"MIG profile {request.profile!r} is not offered by the cluster (known: {known})")
        return f"gpu:{_gres_type_ok(slurm_type)}:1"
    n = request.gpus
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"--gpus takes a whole number of GPUs, not {n!r}")
    if n == 0:
        return None
    return f"gpu:{_gres_type_ok(gres_type)}:{n}" if gres_type else f"gpu:{n}"


def _gres_type_ok(t: str) -> str:
    if not isinstance(t, str) or not _GRES_TYPE_OK.match(t):
        raise ValueError(f"{t!r} is not a Slurm GRES type name")
    return t


_WORD = re.compile(r"[A-Za-z0-9_.+-]{1,200}\Z")
_NODELIST = re.compile(r"[A-Za-z0-9_.,\[\]-]{1,1000}\Z")


def _word(what: str, v: object) -> str:
    # no spaces or '=': these values come back in scontrol's Key=Value text, which must stay exact
    if not isinstance(v, str) or not _WORD.match(v):
        raise ValueError(f"{what} {v!r}: letters, digits and _.+- only")
    return v


def submit_args(*, partition: str, name: str, uid: int, gid: int, gres: str | None, cpus: float | None,
                memory_bytes: int | None, time_limit_s: float | None, workdir: str,
                nodelist: str | None = None, command: str = "sleep infinity") -> list[str]:
    """argv after ``sbatch`` for a DS01 job submitted as ``uid:gid`` (the head runs sbatch as root).

    Every value goes in its own ``--key=value`` element (no shell), and is checked so it cannot
    change what Slurm later prints about the job. ``command`` is DS01's, never a user's.
    """
    for what, v in (("uid", uid), ("gid", gid)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{what} must be a non-negative integer, not {v!r}")
    if not isinstance(workdir, str) or not workdir.startswith("/") or any(c.isspace() or ord(c) < 32 for c in workdir):
        raise ValueError(f"workdir {workdir!r}: an absolute path without spaces or control characters")
    if not isinstance(command, str) or not command.strip() or "\n" in command or "\0" in command:
        raise ValueError("the job command is one non-empty line")
    args = ["--parsable", f"--uid={uid}", f"--gid={gid}", f"--partition={_word('partition', partition)}",
            f"--job-name={_word('job name', name)}", f"--chdir={workdir}",
            "--output=/dev/null", "--error=/dev/null",
            # a node lost means the container is lost: the head re-places it, Slurm must not requeue
            "--no-requeue"]
    if gres:
        if not re.fullmatch(r"gpu(:[A-Za-z0-9_.+-]{1,64})?:\d{1,4}", gres):
            raise ValueError(f"--gres {gres!r} is not gpu[:type]:N")
        args.append(f"--gres={gres}")
    if cpus:
        if not math.isfinite(cpus) or cpus < 0:
            raise ValueError(f"cpus {cpus!r}")
        args.append(f"--cpus-per-task={math.ceil(cpus)}")
    if memory_bytes:
        if memory_bytes < 0:
            raise ValueError(f"memory {memory_bytes!r}")
        args.append(f"--mem={-(-int(memory_bytes) // 1024**2)}M")
    args.append(f"--time={slurm_time(time_limit_s)}")
    if nodelist:
        if not isinstance(nodelist, str) or not _NODELIST.match(nodelist):
            raise ValueError(f"nodelist {nodelist!r}: node names only")
        args.append(f"--nodelist={nodelist}")
    args.append(f"--wrap={command}")
    return args


def parse_submit(out: str) -> int:
    """The job id from ``sbatch --parsable`` (``"123"`` or ``"123;cluster"``, last line)."""
    lines = [ln.strip() for ln in (out or "").splitlines() if ln.strip()]
    head = lines[-1].split(";", 1)[0].strip() if lines else ""
    if not head.isdigit():
        raise ValueError(f"sbatch printed no job id: {(out or '').strip()[:120]!r}")
    return int(head)


# -- nodes and config ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmNode:
    """One node of ``scontrol show node -o``. ``gres`` counts GPUs by type (``""`` untyped)."""

    name: str
    state: str
    addr: str | None
    gres: dict[str, int]
    reason: str | None

    @property
    def usable(self) -> bool:
        """Slurm may place work here: not down, drained/draining, failed or not responding
        (``IDLE+DRAIN``, ``DOWN*``: a trailing ``*`` is sinfo's "not responding")."""
        flags = {p.rstrip("*~#!%$@^-") for p in self.state.upper().split("+")}
        return "*" not in self.state and not flags & UNUSABLE_NODE_STATES


def _node_gres(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if _absent(text):
        return out
    for part in _split_top(text):  # type: ignore[arg-type]
        part = part.split("(", 1)[0]
        name, *rest = part.split(":")
        if name != "gpu":
            continue
        count, gtype = 1, ""
        if rest and rest[-1].isdigit():
            count = int(rest.pop())
        if rest:
            gtype = rest[0]
        out[gtype] = out.get(gtype, 0) + count
    return out


_REASON_STAMP = re.compile(r"\s*\[[^\]]*@[^\]]*\]\s*\Z")


def parse_nodes(text: str) -> list[SlurmNode]:
    """Every node of ``scontrol show node -o``; ValueError on other text."""
    if not text.strip() or "no nodes in the system" in text.lower():
        return []
    out = []
    for rec in _records(text, "NodeName"):
        f = _fields(rec, _NODE_UNIQUE)
        reason = _one(f, "Reason")
        reason = None if _absent(reason) else _REASON_STAMP.sub("", reason).strip() or None  # type: ignore[arg-type]
        addr = _one(f, "NodeAddr")
        out.append(SlurmNode(name=(_one(f, "NodeName") or "").strip(), state=(_one(f, "State") or "UNKNOWN").strip(),
                             addr=None if _absent(addr) else addr.strip(),  # type: ignore[union-attr]
                             gres=_node_gres(_one(f, "Gres")), reason=reason))
    return out


_CONFIG_LINE = re.compile(r"([A-Za-z][A-Za-z0-9_/]*)\s+= ?(.*)\Z")


def parse_config(text: str) -> dict[str, str]:
    """``Key = Value`` lines of ``scontrol show config`` (the first of a repeated key wins: the
    main section comes before the plugin sections)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        m = _CONFIG_LINE.match(raw.strip())
        if m:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


# -- policy -> Slurm ----------------------------------------------------------------------------

FAIRSHARE_WEIGHT = 10000
"""PriorityWeightFairshare. The age weight equals it, so a job that waited PriorityMaxAge
outranks any fair-share difference: DS01's "every request reaches the head"."""
AGING_TO_MAX_AGE = 168
"""PriorityMaxAge = queue.aging × this. DS01's aging (a wait of ``aging`` offsets one GPU-hour)
has no exact Slurm form: Slurm's age factor grows linearly to 1 at PriorityMaxAge. 168 makes
DS01's default (1 h) land on Slurm's own default (7 days)."""


@dataclass(frozen=True)
class Setting:
    """A slurm.conf key DS01 wants, and the DS01 config key it comes from."""

    key: str
    value: str
    source: str


def wanted_settings(config: Config) -> list[Setting]:
    """slurm.conf keys for DS01's fair queue, each in ``scontrol show config``'s own format."""
    q = config.queue
    return [
        Setting("PriorityType", "priority/multifactor", "queue"),
        Setting("PriorityDecayHalfLife", slurm_duration(q.half_life), "queue.half_life"),
        Setting("PriorityWeightFairshare", str(FAIRSHARE_WEIGHT), "queue"),
        Setting("PriorityWeightAge", str(FAIRSHARE_WEIGHT), "queue.aging"),
        Setting("PriorityMaxAge", slurm_duration(q.aging * AGING_TO_MAX_AGE), "queue.aging"),
    ]


# Limits field -> (Slurm equivalent, how exact). The rest are enforced by the head at submit time.
LIMIT_MAPPING: dict[str, tuple[str, str]] = {
    "max_gpus": ("QOS MaxTRESPerUser=gres/gpu=N",
                 "whole GPUs, floor(max_gpus); with MIG floor(max_gpus × 7), since Slurm counts a MIG "
                 "instance as one gres/gpu. The exact GPU-equivalents are checked by the head at submit time"),
    "max_gpus_per_container": ("QOS MaxTRESPerJob=gres/gpu=N",
                               "same rounding as max_gpus; exact equivalents checked by the head"),
    "max_runtime": ("QOS MaxWall and sbatch --time", "rounded up to whole minutes; 0 = unlimited"),
    "max_containers": ("QOS MaxJobsPerUser (with max_jobs_running)",
                       "Slurm sees containers and batch jobs alike; the head enforces each count"),
    "max_jobs_running": ("QOS MaxJobsPerUser (with max_containers)", "as max_containers"),
    "max_jobs_queued": ("QOS MaxSubmitJobsPerUser (all three counts added)", "as max_containers"),
    "priority_weight": ("association Fairshare=round(weight × 100)", "shares relative to other users"),
    "cpus": ("sbatch --cpus-per-task", "rounded up to whole CPUs; the container keeps the exact quota"),
    "memory": ("sbatch --mem", "rounded up to MiB"),
}


def _gpu_count(eq: float, mig: bool) -> int:
    return math.floor(eq * 7 + 1e-9) if mig else math.floor(eq + 1e-9)


def qos_limits(config: Config, users: Iterable[tuple[str, set[str]]], *, mig: bool = False) -> dict[str, dict[str, str]]:
    """Per user name, the ``sacctmgr`` values DS01's effective limits map to (``users``: name and
    Unix groups). GPU counts are floored (Slurm counts devices, DS01 GPU-equivalents); with
    ``mig`` a MIG instance is one device, so the count admits 1-slice instances up to the limit.
    Slurm's limit is a backstop, never stricter than DS01's; the head checks the exact figure."""
    out: dict[str, dict[str, str]] = {}
    for user, groups in users:
        lim = effective_limits(config, user, set(groups))
        jobs = lim.max_containers + lim.max_jobs_running
        out[user] = {
            "MaxTRESPerUser": f"gres/gpu={_gpu_count(lim.max_gpus, mig)}",
            "MaxTRESPerJob": f"gres/gpu={_gpu_count(lim.max_gpus_per_container, mig)}",
            # sacctmgr clears a limit with -1 ("UNLIMITED" is for sbatch --time)
            "MaxWall": slurm_time(lim.max_runtime) if lim.max_runtime > 0 else "-1",
            "MaxJobsPerUser": str(jobs),
            "MaxSubmitJobsPerUser": str(jobs + lim.max_jobs_queued),
            "Fairshare": str(max(1, round(lim.priority_weight * 100))),
        }
    return out


def settings_diff(current: Mapping[str, str], wanted: Iterable[Setting]) -> list[tuple[str, str | None, str, str]]:
    """(key, current value or None, wanted value, DS01 source) for each key that differs. Keys
    match case-insensitively: slurm.conf's ``PriorityWeightFairshare`` is printed by ``scontrol
    show config`` as ``PriorityWeightFairShare``."""
    by_lower = {k.lower(): v for k, v in current.items()}
    out = []
    for s in wanted:
        cur = by_lower.get(s.key.lower())
        if cur is None or cur.strip() != s.value:
            out.append((s.key, cur, s.value, s.source))
    return out


def unmapped(config: Config) -> list[str]:
    """DS01 settings with no Slurm equivalent: the head enforces them at submit time or in its
    own loops (idle reclaim). Derived from the Limits model, so a new limit shows up here."""
    keys = [f"limits.{k}" for k in Limits.model_fields if k not in LIMIT_MAPPING]
    if config.lifecycle.enabled:
        keys += ["lifecycle.thresholds", "lifecycle.idle_warnings", "lifecycle.runtime_warnings"]
    return keys


_UNMAPPED_NOTES = {
    "shm_size": "enforced by the head: part of the container spec the agent starts",
    "pids": "enforced by the head: part of the container spec the agent starts",
    "idle_timeout": "enforced by the head: idle reclaim warns, then removes the container and cancels the job",
    "gpu_hold_after_stop": "no meaning in cluster mode: a stop ends the job and frees its GPUs",
    "max_workspace_bytes": "enforced by the head: a user quota on the shared workspace filesystem",
    "max_image_bytes": "enforced by the head when it builds (images are built on the head)",
}


def policy_table(config: Config) -> list[tuple[str, str, str]]:
    """(DS01 key, Slurm equivalent, note) rows for ``docs/scale-out.md`` and ``cluster sync``."""
    rows = [(s.source if s.source != "queue" else f"queue ({s.key})", f"slurm.conf {s.key}={s.value}",
             "written to the DS01 include file") for s in wanted_settings(config)]
    rows += [(f"limits.{k}", eq, note) for k, (eq, note) in LIMIT_MAPPING.items()]
    rows += [(k, "none", _UNMAPPED_NOTES.get(k.removeprefix("limits."), "enforced by the head at submit time")
              if k.startswith("limits.") else "enforced by the head: idle reclaim") for k in unmapped(config)]
    return rows
