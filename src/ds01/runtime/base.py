"""The one narrow interface between DS01 and a container engine (Docker now, Kubernetes later).

Like JupyterHub's Spawner, a backend only knows lifecycle verbs on one container at a time; policy,
ownership, timeouts, metrics and state commits live in the services layer above it.

State contract
--------------
* A container is identified by the engine id (or the unique name) returned by :meth:`create`.
* "Not found" means the engine has no such container any more (e.g. removed behind DS01's back).
  :meth:`inspect` returns ``None`` for it; :meth:`start` and :meth:`stop` raise
  :class:`ContainerGone`; :meth:`remove` treats it as success.
* :meth:`stop` and :meth:`remove` are idempotent: stopping a stopped container and removing a
  removed one succeed without doing anything.
* :meth:`start` of a running container is a no-op.
* Every method raises :class:`ds01.errors.RuntimeFailure` for engine failures the caller cannot fix
  by changing its input, with the engine's message.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

from ds01.errors import NotFound
# The spec types are pure data (policy builds them); re-exported here for the backends.
from ds01.models.container import Account, ContainerSpec, Mount, Tmpfs  # noqa: F401


class ContainerGone(NotFound):
    """The engine has no container with this id (any more)."""

    code = "not_found"


@dataclass
class ContainerInfo:
    id: str
    name: str
    status: str  # created | running | paused | restarting | exited | dead | removing
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    oom_killed: bool = False  # the kernel killed it at its memory limit (inspect only)
    image_id: str | None = None  # the engine's id of the image it runs (None: not reported)


@dataclass
class ExecHandle:
    """An exec session's raw stream. ``sock`` is a connected socket carrying the process's
    terminal (tty) or Docker's multiplexed stdout/stderr frames (no tty): stdin is written to it,
    output is read through ``RuntimeBackend.exec_frames``."""

    id: str
    sock: object
    tty: bool


class RuntimeBackend(abc.ABC):
    def security_options(self) -> list[str] | None:
        """The engine's host-wide security options (``docker info`` SecurityOptions, e.g.
        ``name=no-new-privileges``); None when the backend cannot tell."""
        return None

    @abc.abstractmethod
    def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (do not start) a container from ``spec``. Raises Conflict if the name is taken.
        The container is on ``spec.network`` only (created when missing, labelled with the
        instance/uid labels of ``spec.labels``), reachable there by ``spec.hostname``."""

    @abc.abstractmethod
    def start(self, container_id: str) -> None:
        """Start; no-op if running; ContainerGone if it does not exist."""

    @abc.abstractmethod
    def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; no-op if not running; ContainerGone if missing."""

    @abc.abstractmethod
    def remove(self, container_id: str, force: bool = False) -> bool:
        """Remove; True if removed now, False if it did not exist. A running container needs ``force``."""

    @abc.abstractmethod
    def inspect(self, container_id: str) -> ContainerInfo | None:
        """Current state, or None when the engine has no such container."""

    @abc.abstractmethod
    def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        """All containers (any state) carrying every one of ``labels``."""

    @abc.abstractmethod
    def stats(self, container_id: str) -> dict:
        """One sample: ``cpu_percent``, ``memory_bytes``, ``memory_limit``, ``pids``."""

    @abc.abstractmethod
    def exec_start(self, container_id: str, cmd: list[str], *, user: str, env: dict[str, str],
                   workdir: str, tty: bool) -> ExecHandle:
        """Start a process in a running container and return its attached stream."""

    @abc.abstractmethod
    def exec_frames(self, handle: ExecHandle) -> Iterator[tuple[int, bytes]]:
        """The process's output as ``(stream, data)`` frames, 1 stdout / 2 stderr (a tty's output
        is all stdout). Blocking, even while ``handle.sock`` is non-blocking (stdin is written to
        it from an event loop); ends at end of stream, also after ``handle.sock.shutdown``."""

    @abc.abstractmethod
    def exec_resize(self, exec_id: str, rows: int, cols: int) -> bool:
        """Resize an exec's terminal; False if the engine refused (process not started or gone)."""

    @abc.abstractmethod
    def exec_exit_code(self, exec_id: str) -> int | None:
        """Exit code of a finished exec, None while it runs."""

    def exec_pid(self, exec_id: str) -> int | None:
        """The host pid of a running exec's process (a process-group leader), None when it is
        not running or the engine cannot tell (then it cannot be signalled)."""
        return None

    @abc.abstractmethod
    def image_exists(self, ref: str) -> bool:
        """Whether the engine has this image locally."""

    def prune_networks(self, selector: dict[str, str]) -> int:  # pragma: no cover - optional
        """Remove the user networks (``ContainerSpec.network``: made by :meth:`create`, labelled
        with ``selector``'s keys) that carry all of ``selector`` and no container is on; returns
        how many. Housekeeping: never raises."""
        return 0

    def logs(self, container_id: str, tail: int = 50) -> str:  # pragma: no cover - optional
        return ""

    def follow_logs(self, container_id: str) -> Iterator[bytes]:  # pragma: no cover - optional
        """Everything the container wrote since it started, then more until it exits."""
        return iter(())

    def events(self) -> Iterator[dict]:  # pragma: no cover - optional
        return iter(())


# --------------------------------------------------------------------------- images
#
# Image verbs, added for ``image-*`` (issue 3). Same rules as above: the backend knows nothing of
# users or policy; the services layer decides tags, labels, build args and ownership.


@dataclass
class ImageInfo:
    id: str  # full engine id ("sha256:…")
    tags: list[str]
    labels: dict[str, str]
    size: int  # bytes
    created: float  # unix time
    digests: list[str] = field(default_factory=list)  # repo@sha256:… names (pulled images)
    onbuild: list[str] = field(default_factory=list)  # the image's ONBUILD triggers (inspect only)
    volumes: list[str] = field(default_factory=list)  # the image's declared VOLUMEs (inspect only)
    env: list[str] = field(default_factory=list)  # the image's ENV, "K=V" (inspect only)


class RuntimeImages(abc.ABC):
    """Image half of the backend (mixed into :class:`RuntimeBackend` implementations).

    Build contract
    --------------
    :meth:`build_image` builds an *untagged* image from a tar build context and yields the
    engine's progress as dicts with exactly one key:

    * ``{"stream": text}``: a piece of build output (may hold several lines or part of one);
    * ``{"error": message}``: the build failed (the last item);
    * ``{"id": image_id}``: the built image (the last item of a successful build).

    Nothing a user controls reaches the engine except the context tar: the backend never sets a
    network mode (the engine's default bridge), never privileged or extra capabilities, never
    host mounts, and never pulls when the base image exists locally. Every step gets ``memory``
    and ``cpus``; all steps together at most ``pids`` processes (``runtime/build_cgroup.py``),
    and an error from exceeding a limit says so. Exceeding ``timeout`` or
    setting ``cancel`` aborts the build (the engine stops the step's container when the client
    goes away) and raises :class:`ds01.errors.BuildFailed`.
    """

    @abc.abstractmethod
    def build_image(self, context: BinaryIO, *, labels: dict[str, str], buildargs: dict[str, str],
                    nocache: bool, timeout: float, memory: int | None = None,
                    cancel: threading.Event | None = None, pids: int | None = None,
                    cpus: float | None = None) -> Iterator[dict]:
        """Build from ``context`` (a tar with ``Dockerfile`` at its root); see the class doc."""

    @abc.abstractmethod
    def image_inspect(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` (name:tag or id), or None when the engine has no such image."""

    @abc.abstractmethod
    def image_list(self, labels: dict[str, str]) -> list[ImageInfo]:
        """Every image carrying all of ``labels``."""

    @abc.abstractmethod
    def image_tag(self, image_id: str, repository: str, tag: str) -> None:
        """Point ``repository:tag`` at ``image_id`` (moving the tag if it exists)."""

    @abc.abstractmethod
    def image_remove(self, ref: str, force: bool = False) -> bool:
        """Remove a tag (and the image when it was the last one). True if removed, False if it
        did not exist. Raises Conflict while a container uses the image (unless ``force``)."""

    def image_history(self, ref: str) -> list[dict] | None:
        """The engine's history of ``ref`` (newest step first; each with ``Created``,
        ``CreatedBy``, ``Size``), or None when the backend cannot tell (then an image counts its
        own whole size: ``policy/disk.image_bytes``)."""
        return None

    @abc.abstractmethod
    def image_import(self, rootfs_tar: str, repository: str, tag: str, changes: list[str]) -> str:
        """``docker import`` of a root filesystem tar file with Dockerfile ``changes``
        (ENV, WORKDIR, CMD, LABEL …); returns the new image id."""
