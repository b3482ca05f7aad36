"""Engine label keys DS01 puts on what it creates, and the selectors that find them again.

One module so the keys are spelled once: the daemon finds its containers by these labels after a
restart (``reconcile``), so a typo here is a container that is never adopted.
"""

from __future__ import annotations

PREFIX = "ds01"

MANAGED = f"{PREFIX}.managed"
INSTANCE = f"{PREFIX}.instance"
USER = f"{PREFIX}.user"
UID = f"{PREFIX}.uid"
PROJECT = f"{PREFIX}.project"
IMAGE = f"{PREFIX}.image"
GPUS = f"{PREFIX}.gpus"
CREATED_AT = f"{PREFIX}.created_at"
PROBE = f"{PREFIX}.probe"
JOB = f"{PREFIX}.job"  # a batch job's container: its job id (issue 14)
NODE = f"{PREFIX}.node"  # cluster mode: the node it runs on (issue 18)
SLURM_JOB = f"{PREFIX}.slurm_job"  # cluster mode: the Slurm job whose life it shares
WORKSPACE = f"{PREFIX}.workspace"  # cluster mode: the workspace its node pins at each start
# images only
BASE = f"{PREFIX}.base"
CONTENT_HASH = f"{PREFIX}.content_hash"


def managed(instance: str, uid: int | None = None) -> dict[str, str]:
    """The selector for this daemon instance's user containers (optionally one user's)."""
    sel = {MANAGED: "true", INSTANCE: instance}
    if uid is not None:
        sel[UID] = str(uid)
    return sel
