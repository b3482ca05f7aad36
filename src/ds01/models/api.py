"""Request bodies of the API. ``extra="forbid"``: a field the API does not know (``privileged``,
``volumes``, ``labels``, ``cap_add`` …) is an error, so such options are not even expressible."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserScoped(Body):
    user: str | None = Field(None, max_length=64, description="admins only: act on this user's containers")


class GpuFields(Body):
    # Types are loose on purpose: the allocator gives the precise message for --gpus 0 / -1 / huge.
    gpus: int | None = None
    gpu_profile: str | None = Field(None, max_length=32)
    mig: int | None = None
    queue: bool = False

    def gpu_request(self):
        from ds01.models.gpu import GpuRequest

        return GpuRequest(gpus=self.gpus, profile=self.gpu_profile, mig=self.mig)


class CreateContainer(UserScoped, GpuFields):
    project: str = Field(max_length=200)
    image: str | None = Field(None, min_length=1, max_length=300)
    cpu_only: bool = False
    ports: list[int] = Field(default_factory=list, max_length=4)


class DeployContainer(CreateContainer):
    pass


class RetireContainer(UserScoped):
    timeout: float | None = Field(None, ge=0, le=3600)
    # refuse (409, details.processes) when processes other than shells run (the CLI without --yes)
    check_work: bool = False


class StartContainer(UserScoped):
    pass


class StopContainer(UserScoped):
    timeout: float | None = Field(None, ge=0, le=3600)
    check_work: bool = False  # as RetireContainer's


class RemoveContainer(UserScoped):
    force: bool = False


class ExecRequest(Body):
    """First (text) message on the exec WebSocket."""

    cmd: list[str] | None = Field(None, max_length=4096)
    tty: bool = False
    rows: int = Field(24, ge=1, le=1000)
    cols: int = Field(80, ge=1, le=1000)
    term: str = Field("xterm", max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")
    user: str | None = Field(None, max_length=64)
    start: bool = False
    # container-ssh: the daemon runs its sshd (cmd and tty must stay unset); ``start`` then means
    # "the client starts a missing or stopped container itself" (ds01.services.ssh)
    ssh: bool = False


# -- images (issue 3) ---------------------------------------------------------------------


class BuildImage(UserScoped):
    """POST /v1/images/{project}/build: build ~/workspace/<project>/Dockerfile."""

    no_cache: bool = False


class DeleteImage(UserScoped):
    """POST /v1/images/{project}/delete; ``force`` removes containers using it first."""

    force: bool = False


class BootstrapBaseImage(Body):
    """POST /v1/admin/base-image/bootstrap (admins)."""

    suite: str = Field("bookworm", max_length=32)
    tag: str = Field("ds01/base:latest", max_length=255)
    force: bool = False


class PullImage(Body):
    """POST /v1/images-pull: fetch an allowed image that is not on the host (NDJSON progress)."""

    ref: str = Field(..., min_length=1, max_length=512)


class AdminPullImages(Body):
    """POST /v1/admin/images/pull (admins): the catalog defaults and/or named images."""

    refs: list[str] = Field(default_factory=list, max_length=200)
    defaults: bool = False


class PruneImages(Body):
    """POST /v1/admin/images/prune (admins)."""

    unused_for: float = Field(30 * 86400, ge=0, le=10 * 366 * 86400)
    dry_run: bool = False
    only: list[str] = Field(default_factory=list, max_length=50)


# -- lifecycle (issue 6) ------------------------------------------------------------------


class KeepAlive(UserScoped):
    """POST /v1/containers/{ref}/keepalive: postpone the idle stop (default and bound: config)."""

    seconds: float | None = Field(None, gt=0, le=366 * 86400)


class GrantExemption(Body):
    """POST /v1/admin/exemptions (admins): exempt a user from idle stops / max runtime."""

    user: str = Field(min_length=1, max_length=64)
    kind: str = Field("all", pattern=r"^(idle|runtime|all)$")
    seconds: float = Field(gt=0, le=366 * 86400)
    reason: str | None = Field(None, max_length=500)



# -- batch jobs (issue 14) ----------------------------------------------------------------


class SubmitJob(Body):
    """POST /v1/jobs: run ``command`` in a fresh container of ``project``'s image."""

    project: str = Field(max_length=200)
    command: list[str] = Field(max_length=4096)
    gpus: int | None = None
    gpu_profile: str | None = Field(None, max_length=32)
    mig: int | None = None
    time: str | None = Field(None, max_length=32)
    name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    array: str | None = Field(None, max_length=200)
    after: list[int] = Field(default_factory=list, max_length=64)
    env: list[str] = Field(default_factory=list, max_length=64)
    requeue: bool = False
    mail: bool = False
    mail_default: bool = False  # the user's config asks for mail: only where the host can mail
    image_id: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$")  # what job-submit just built

    def gpu_request(self):
        from ds01.models.gpu import GpuRequest

        return GpuRequest(gpus=self.gpus, profile=self.gpu_profile, mig=self.mig)


# -- admin: limits (issue 16) ---------------------------------------------------------------


class LimitsChange(Body):
    """POST /v1/admin/limits (admins): set/unset limits of one user, one group or the defaults;
    values are checked by the config schema (``models.config.Limits``) when the file is validated."""

    user: str | None = Field(None, min_length=1, max_length=64)
    group: str | None = Field(None, min_length=1, max_length=64)
    defaults: bool = False
    set: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=64)
    unset: list[str] = Field(default_factory=list, max_length=64)


class ClusterSync(Body):
    """POST /v1/admin/cluster/sync (admins): show DS01's policy as Slurm settings; ``apply``
    writes them (docs/scale-out.md)."""

    apply: bool = False


class CatalogRefresh(Body):
    """POST /v1/admin/catalog/refresh (admins): list the families' tags (``registry``: one v2 API
    base for all of them, e.g. a mirror; else each family's own) and write the catalog overlay."""

    families: list[str] = Field(default_factory=list, max_length=16)
    registry: str | None = Field(None, min_length=8, max_length=255, pattern=r"^https?://[^\s/@]+(/[^\s@]*)?$")
    dry_run: bool = False
