"""Helpers for tests against the two-node Slurm test cluster of scripts/slurm-testcluster.sh.

The cluster is a simulation of two servers with a real scheduler: slurmctld on the host (10.77.0.1),
one slurmd per node in its own network + UTS namespace, fake GPU device files declared as GRES.
Everything needs root (namespaces, ``sbatch --uid``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-testcluster.sh"
DIR = Path(os.environ.get("DS01_SLURM_DIR", "/run/ds01-slurm"))
SLURM_CONF = DIR / "slurm.conf"
PARTITION = "ds01"
HOST_ADDR = "10.77.0.1"
NODES = {"ds01n1": "10.77.0.11", "ds01n2": "10.77.0.12"}
GPUS_PER_NODE = 2
SQUEUE_FIELDS = ("id", "user", "state", "reason", "nodes", "gres", "start", "name")
_SQUEUE_FMT = "%i|%u|%T|%R|%N|%b|%S|%j"  # same order as SQUEUE_FIELDS


def unavailable() -> str | None:
    """Why the cluster cannot run here (the fixture fails the run with it: CI must have Slurm), or None."""
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "nsenter", "unshare", "ip"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} not installed (scripts/host-prepare.sh installs slurm-wlm and munge)"
    return None


def _script(*args: str) -> None:
    subprocess.run(["bash", str(SCRIPT), *args], check=True, env=env())


def up() -> None:
    """Start (or confirm) the cluster; returns once both nodes are idle. Idempotent."""
    _script("up")


def down() -> None:
    """Stop every daemon, remove namespaces, bridge and all state under DIR."""
    _script("down")


def env() -> dict[str, str]:
    """os.environ plus SLURM_CONF pointing at the test cluster (pass as ``env=``)."""
    return {**os.environ, "SLURM_CONF": str(SLURM_CONF)}


def run_in_node(node: str, argv: list[str], **popen_kw) -> subprocess.Popen:
    """Start ``argv`` inside ``node``'s network and UTS namespaces (it sees the node's address and
    hostname). The Popen's pid is the command's own (the script execs through nsenter)."""
    if node not in NODES:
        raise ValueError(f"unknown node {node!r}")
    popen_kw.setdefault("env", env())
    return subprocess.Popen(["bash", str(SCRIPT), "exec", node, *argv], **popen_kw)


def slurm(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a Slurm client command against the test cluster, text output captured."""
    return subprocess.run(list(argv), env=env(), capture_output=True, text=True, check=check)


def squeue(user: str | None = None) -> list[dict[str, str]]:
    """Jobs in the queue as dicts keyed by SQUEUE_FIELDS (reason is e.g. ``(Resources)`` or the
    node list for running jobs; start is ``N/A`` or an ISO time)."""
    argv = ["squeue", "-h", "-o", _SQUEUE_FMT]
    if user:
        argv += ["-u", user]
    out = slurm(*argv).stdout
    # the job name is last and may itself contain '|'
    return [dict(zip(SQUEUE_FIELDS, line.split("|", len(SQUEUE_FIELDS) - 1))) for line in out.splitlines() if line]


def job(job_id: int | str) -> str:
    """``scontrol show job -d -o`` text of one job (one line; finished jobs stay for MinJobAge=300 s)."""
    return slurm("scontrol", "show", "job", "-d", "-o", str(job_id)).stdout.strip()
