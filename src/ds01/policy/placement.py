"""Pure parts of placement (issue 18): what a placement decided, the device keys of a cluster,
binding a container spec to the devices a Slurm job was given, and the checks a node agent
makes before it acts (a live job of that user, on its own node)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from ds01 import labels
from ds01.models.container import ContainerSpec
from ds01.policy.slurm import SlurmJob

# the payload format of a head→agent MUNGE credential; a version bump refuses old heads
DIGEST_VERSION = "ds01-agent-v1"


@dataclass(frozen=True)
class Placed:
    """Slurm started job ``job`` on ``node`` with GPU indices ``indices`` (node-local)."""

    job: int
    node: str
    indices: tuple[int, ...]

    @property
    def devices(self) -> dict[str, float]:
        """The head's device keys (unique across the cluster) → GPU-equivalents held."""
        return {device_key(self.node, i): 1.0 for i in self.indices}

    @property
    def device_ids(self) -> tuple[str, ...]:
        """What the container's NVIDIA_VISIBLE_DEVICES names: the node's own GPU indices, as
        Slurm's gres.conf lists them (AutoDetect=nvml keeps them NVML's order)."""
        return tuple(str(i) for i in self.indices)


@dataclass(frozen=True)
class Pending:
    """Slurm accepted job ``job`` but has not started it: ``reason`` (Slurm's), ``start`` its
    estimate (epoch seconds) when it has one."""

    job: int
    reason: str | None
    start: float | None = None


def device_key(node: str, index: int) -> str:
    return f"{node}/gpu{index}"


def parse_device_key(key: str) -> tuple[str, int] | None:
    node, sep, rest = key.rpartition("/gpu")
    if not sep or not node or not rest.isdigit():
        return None
    return node, int(rest)


def outcome(job: SlurmJob | None, job_id: int) -> Placed | Pending | None:
    """What a submitted job is now: placed, pending, or None (ended / unknown to Slurm)."""
    if job is None or not job.live:
        return None
    if job.running and job.node:
        return Placed(job_id, job.node, job.gpu_indices)
    return Pending(job_id, job.reason, job.start_time)


def registry_ref(registry: str, image: str) -> tuple[str, str] | None:
    """(repository, tag) under the lab registry for a local image name (``ds01/u1001-p:latest``
    → ``reg:5000/ds01/u1001-p``, ``latest``); None when there is no registry or ``image`` names a
    registry already (nodes pull it from there)."""
    if not registry or not image or image.startswith("sha256:"):
        return None
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return None
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        name, tag = image, "latest"
    return f"{registry.rstrip('/')}/{name}", tag


def request_digest(method: str, path: str, body: bytes, node: str = "") -> str:
    """The payload a head→agent credential carries: it binds the node it is for, the method, the
    path (with query) and the body, so a credential cannot be replayed against another request
    or another node (munged's replay cache is per node)."""
    return f"{DIGEST_VERSION} {node} {method.upper()} {path} {hashlib.sha256(body).hexdigest()}"


def response_digest(request: str, status: int, body: bytes) -> str:
    """The payload of an agent's answer credential: it binds the request it answers (its
    digest), the status and the body, so the head believes only the real agent (not a process
    that took the agent's port while it was down)."""
    return (f"{DIGEST_VERSION}-reply {hashlib.sha256(request.encode()).hexdigest()} {int(status)} "
            f"{hashlib.sha256(body).hexdigest()}")


def job_refusal(job: SlurmJob | None, *, job_id: int, node: str, uid: int) -> str | None:
    """Why an agent must not act for (job_id, uid) on ``node``; None when it may. The agent
    acts only for a running job of that very user that Slurm placed on its own node."""
    if job is None:
        return f"Slurm does not know job {job_id}"
    if job.id != job_id:
        return f"Slurm answered for job {job.id}, not {job_id}"
    if not job.running:
        return f"job {job_id} is {job.state}, not running"
    if job.user_id != uid:
        return f"job {job_id} belongs to uid {job.user_id}, not {uid}"
    if job.node != node:
        return f"job {job_id} runs on {job.node}, not on {node}"
    return None


def bind_devices(spec: ContainerSpec, job: SlurmJob, node: str) -> ContainerSpec:
    """``spec`` with exactly the GPUs Slurm gave ``job`` (whatever the request said): the
    visible-devices variables, the device ids the backend binds, the labels."""
    ids = ",".join(str(i) for i in job.gpu_indices)
    # the runtime exposes only those cards, renumbered from 0: CUDA's view is 0..n-1
    cuda = ",".join(str(i) for i in range(len(job.gpu_indices)))
    env = {**spec.env, "NVIDIA_VISIBLE_DEVICES": ids or "void", "CUDA_VISIBLE_DEVICES": cuda}
    lb = {**spec.labels, labels.GPUS: ",".join(device_key(node, i) for i in job.gpu_indices),
          labels.NODE: node, labels.SLURM_JOB: str(job.id)}
    return dataclasses.replace(spec, env=env, labels=lb, gpu_device_ids=tuple(str(i) for i in job.gpu_indices))
