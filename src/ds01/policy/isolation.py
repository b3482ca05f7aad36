"""Pure decisions that keep one user's work apart from another's beyond the container itself:
the user's own network, what an image may not ask the engine for, and the limits of a build."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from ds01.errors import PolicyDenied

# The NVIDIA runtime can read a container's volume mounts under this directory as a device
# request ("volume-mount device lists"): an image VOLUME there would ask for GPUs the allocator
# never handed out. The toolkit matches the mount destination by string prefix, so do we.
GPU_HANDOFF_ROOTS = ("/var/run/nvidia-container-devices", "/run/nvidia-container-devices")


def gpu_handoff_path(path: str) -> bool:
    """Whether a mount/volume destination would be read as a GPU device list (raw or normalised,
    e.g. ``//var/run/./nvidia-container-devices/all``)."""
    raw = str(path).strip()
    norm = posixpath.normpath("/" + raw.lstrip("/")) if raw else raw
    return any(p.startswith(root) for p in (raw, norm) for root in GPU_HANDOFF_ROOTS)


def refuse_gpu_handoff_volumes(volumes: Iterable[str], what: str) -> None:
    """PolicyDenied when ``what`` (an image, a Dockerfile line) declares such a volume."""
    bad = sorted(v for v in volumes if gpu_handoff_path(v))
    if bad:
        raise PolicyDenied(
            f"{what} declares VOLUME {bad[0]}: volumes under /var/run/nvidia-container-devices "
            "would request GPUs past DS01's allocator, so such images cannot be used",
            "remove that VOLUME line; GPUs come from 'container-deploy --gpu …'")


def user_network(instance: str, uid: int) -> str:
    """The Docker network of one user's containers of one daemon instance: containers of the
    same user reach each other on it (by IP and name); no other user's container is on it."""
    return f"ds01-{instance}-u{int(uid)}"


# Every managed container is on its user's network, never on the engine's default bridge
# (shared by everything on the host) nor host/none/container:… modes.
FORBIDDEN_NETWORKS = frozenset({"bridge", "default", "host", "none"})


@dataclass(frozen=True)
class BuildLimits:
    """What a build's steps get: the same pids/memory/CPU limits as the user's containers."""

    pids: int
    memory: int
    cpus: float | None  # None: no CPU limit (the limit is not below the host's CPU count)


def build_limits(limits, host_cpus: int | None) -> BuildLimits:
    """``limits``: the user's effective limits (``policy.limits``)."""
    cpus = float(limits.cpus)
    return BuildLimits(pids=int(limits.pids), memory=int(limits.memory),
                       cpus=None if host_cpus and cpus >= host_cpus else cpus)
