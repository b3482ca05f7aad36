"""One function per daemon endpoint (docker-py ``APIClient`` style): the only place the CLI spells
a ``/v1/…`` path or builds a request body.

Each takes the transport ``c`` (a :class:`ds01.client.http.Client`, or anything with its ``call``
and ``stream``) and returns the decoded JSON; streaming endpoints return the iterator of their
NDJSON items. Bodies carry only the options given (None is left out: the daemon's defaults are
the same), and must validate against the request models in ``ds01.models.api`` (a unit test sends
every one of them through those models).

No imports at module level (not even the HTTP client, see :func:`_q`): command modules import
this at the top and ``--help`` stays instant; and never pydantic, click, docker or rich.
"""

from __future__ import annotations

TYPE_CHECKING = False  # (not typing's: its import costs every CLI start ~5 ms)
if TYPE_CHECKING:
    from typing import Any, Iterator


def _q(segment: object) -> str:
    from ds01.client.http import q

    return q(str(segment))


def _body(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# --------------------------------------------------------------------------- identity


def health(c) -> dict:
    return c.call("GET", "/v1/health")


def whoami(c) -> dict:
    """The caller as the kernel told the daemon: uid, gid, user, home, groups, admin, and the
    daemon's ``workspace_base`` template (where every workspace is)."""
    return c.call("GET", "/v1/whoami")


# --------------------------------------------------------------------------- containers


def container_create(c, project: str, *, image: str | None = None, cpu_only: bool | None = None,
                     gpus: int | None = None, gpu_profile: str | None = None, mig: int | None = None,
                     queue: bool | None = None, ports: list[int] | None = None, user: str | None = None) -> dict:
    """Create (not start); ``{"queued": true, …}`` when it waits for a device."""
    return c.call("POST", "/v1/containers", _body(project=project, image=image, cpu_only=cpu_only, gpus=gpus,
                                                  gpu_profile=gpu_profile, mig=mig, queue=queue,
                                                  ports=ports or None, user=user))


def container_deploy(c, project: str, *, image: str | None = None, cpu_only: bool | None = None,
                     gpus: int | None = None, gpu_profile: str | None = None, mig: int | None = None,
                     queue: bool | None = None, ports: list[int] | None = None, user: str | None = None) -> dict:
    """Create + start (rolled back when the start fails), or reuse the project's container:
    the record, ``{"reused": true, …}`` or ``{"queued": true, …}``."""
    return c.call("POST", "/v1/containers/deploy", _body(project=project, image=image, cpu_only=cpu_only,
                                                         gpus=gpus, gpu_profile=gpu_profile, mig=mig, queue=queue,
                                                         ports=ports or None, user=user))


def container_start(c, project: str, *, user: str | None = None) -> dict:
    return c.call("POST", f"/v1/containers/{_q(project)}/start", _body(user=user))


def container_stop(c, project: str, *, timeout: float | None = None, user: str | None = None,
                   check_work: bool | None = None) -> dict:
    """``check_work``: refuse (Conflict, ``details.processes``) when processes other than shells run.
    The answer has ``gpus_held_for`` (seconds the GPUs stay reserved) when it holds GPUs."""
    return c.call("POST", f"/v1/containers/{_q(project)}/stop",
                  _body(timeout=timeout, user=user, check_work=check_work))


def container_remove(c, project: str, *, force: bool | None = None, user: str | None = None) -> dict:
    return c.call("POST", f"/v1/containers/{_q(project)}/remove", _body(force=force, user=user))


def container_retire(c, project: str, *, timeout: float | None = None, user: str | None = None,
                     check_work: bool | None = None) -> dict:
    """Stop + remove + release the devices; the workspace is kept. ``check_work``: as for stop."""
    return c.call("POST", f"/v1/containers/{_q(project)}/retire",
                  _body(timeout=timeout, user=user, check_work=check_work))


def container_keepalive(c, project: str, *, seconds: float | None = None, user: str | None = None) -> dict:
    return c.call("POST", f"/v1/containers/{_q(project)}/keepalive", _body(seconds=seconds, user=user))


def containers(c, *, running: bool = False, all_users: bool = False, user: str | None = None) -> list[dict]:
    """The caller's container records (``running``: only running ones)."""
    return c.call("GET", "/v1/containers", params={"all_users": all_users, "user": user, "running": running})


def container_stats(c, *, all_users: bool = False, user: str | None = None) -> list[dict]:
    return c.call("GET", "/v1/containers-stats", params={"all_users": all_users, "user": user})


def exec_path(project: str) -> str:
    """The path of the exec WebSocket (``ds01.client.stream`` opens it; ``container-ssh`` too)."""
    return f"/v1/containers/{_q(project)}/exec"


def ssh_host_key(c) -> dict:
    """``{"public_key": "ssh-ed25519 …"}``: the host key of every container of the caller."""
    return c.call("GET", "/v1/ssh/host-key")


# --------------------------------------------------------------------------- images


def images(c, *, all_users: bool = False, user: str | None = None) -> list[dict]:
    return c.call("GET", "/v1/images", params={"all_users": all_users, "user": user})


def image(c, project: str, *, user: str | None = None) -> dict:
    """The daemon's view of the project image; NotFound when there is none."""
    return c.call("GET", f"/v1/images/{_q(project)}", params={"user": user})


def image_build(c, project: str, *, no_cache: bool | None = None, user: str | None = None) -> Iterator[dict]:
    """The build's NDJSON items (``stream`` lines, then ``result``); a failure raises."""
    return c.stream("POST", f"/v1/images/{_q(project)}/build", _body(no_cache=no_cache, user=user))


def image_delete(c, project: str, *, force: bool | None = None, user: str | None = None) -> dict:
    return c.call("POST", f"/v1/images/{_q(project)}/delete", _body(force=force, user=user))


def images_catalog(c, *, framework: str | None = None) -> dict:
    return c.call("GET", "/v1/images-catalog", params={"framework": framework})


def images_select(c, *, framework: str | None = None) -> dict:
    """The base image for ``framework`` (``F[==VER]``; None: the lab's CPU base)."""
    return c.call("GET", "/v1/images-select", params={"framework": framework})


def base_image_bootstrap(c, *, suite: str | None = None, tag: str | None = None,
                         force: bool | None = None) -> Iterator[dict]:
    """(admins) Build the lab's base image; NDJSON items like :func:`image_build`."""
    return c.stream("POST", "/v1/admin/base-image/bootstrap", _body(suite=suite, tag=tag, force=force))


def image_pull(c, ref: str) -> Iterator[dict]:
    """Fetch an allowed image that is not on the host: per-layer progress, then ``pulled``."""
    return c.stream("POST", "/v1/images-pull", _body(ref=ref))


def admin_images_pull(c, refs: list[str] | None = None, *, defaults: bool | None = None) -> Iterator[dict]:
    """(admins) Pre-fetch named images and/or the catalog defaults; NDJSON like :func:`image_pull`."""
    return c.stream("POST", "/v1/admin/images/pull", _body(refs=refs or None, defaults=defaults))


def admin_images_usage(c) -> dict:
    return c.call("GET", "/v1/admin/images/usage")


def admin_images_prune(c, *, unused_for: float | None = None, dry_run: bool | None = None,
                       only: list[str] | None = None) -> dict:
    return c.call("POST", "/v1/admin/images/prune", _body(unused_for=unused_for, dry_run=dry_run, only=only or None))


def admin_backup(c, *, download: bool = False) -> Iterator[dict]:
    """(admins) Back up the state DB (kept in the state dir); ``download``: its bytes too."""
    return c.stream("POST", "/v1/admin/backup", params={"download": "1" if download else "0"})


# --------------------------------------------------------------------------- GPUs and the queue


def gpus(c) -> dict:
    return c.call("GET", "/v1/gpus")


def limits(c, *, user: str | None = None) -> dict:
    return c.call("GET", "/v1/limits", params={"user": user})


def queue(c, *, all_users: bool = False) -> list[dict]:
    return c.call("GET", "/v1/queue", params={"all_users": all_users})


def queue_cancel(c, queue_id: int) -> dict:
    return c.call("POST", f"/v1/queue/{int(queue_id)}/cancel", {})


# --------------------------------------------------------------------------- lifecycle (admins)


def exemptions(c) -> list[dict]:
    return c.call("GET", "/v1/admin/exemptions")


def exemption_grant(c, user: str, *, seconds: float, kind: str | None = None, reason: str | None = None) -> dict:
    return c.call("POST", "/v1/admin/exemptions", _body(user=user, kind=kind, seconds=seconds, reason=reason))


def exemption_revoke(c, exemption_id: int) -> dict:
    return c.call("POST", f"/v1/admin/exemptions/{int(exemption_id)}/revoke")


# --------------------------------------------------------------------------- seeing the lab


def status(c) -> dict:
    return c.call("GET", "/v1/status")


def dashboard(c, *, stats: bool = True) -> dict:
    """(admins) The admin dashboard; ``stats`` False skips per-container CPU/memory."""
    return c.call("GET", "/v1/admin/dashboard", params={"stats": "1" if stats else "0"})


def events(c, *, since: str | None = None, user: str | None = None, types: list[str] | tuple[str, ...] = (),
           results: list[str] | tuple[str, ...] = (), limit: int | None = None, all: bool = False) -> list[dict]:
    """``all``: also the ``container.exec`` events (one per shell or command; hidden by default)."""
    return c.call("GET", "/v1/events", params={"since": since, "user": user, "type": ",".join(types) or None,
                                               "result": ",".join(results) or None, "limit": limit,
                                               "all": "1" if all else None})


def usage(c, *, since: str | None = None, until: str | None = None, by: str | None = None,
          user: str | None = None, all_users: bool = False) -> dict:
    """``all_users`` (admins): say explicitly that everyone's usage is wanted (refused otherwise)."""
    return c.call("GET", "/v1/usage", params={"since": since, "until": until, "by": by, "user": user,
                                              "all_users": "1" if all_users else None})


# --------------------------------------------------------------------------- batch jobs (issue 14)


def job_submit(c, project: str, command: list[str], *, gpus: int | None = None, gpu_profile: str | None = None,
               mig: int | None = None, time: str | None = None, name: str | None = None, array: str | None = None,
               after: list[int] | None = None, env: list[str] | None = None, requeue: bool | None = None,
               mail: bool | None = None, mail_default: bool | None = None, image_id: str | None = None) -> dict:
    """Queue a job (one per array task): ``{"id", "ids", ...}`` at once."""
    return c.call("POST", "/v1/jobs", _body(project=project, command=list(command), gpus=gpus,
                                            gpu_profile=gpu_profile, mig=mig, time=time, name=name, array=array,
                                            after=after or None, env=env or None, requeue=requeue, mail=mail,
                                            mail_default=mail_default, image_id=image_id))


def jobs(c, *, all: bool = False, state: str | None = None, all_users: bool = False) -> list[dict]:
    return c.call("GET", "/v1/jobs", params={"all": "1" if all else None, "state": state,
                                              "all_users": "1" if all_users else None})


def job(c, job_id: int) -> dict:
    return c.call("GET", f"/v1/jobs/{int(job_id)}")


def job_logs(c, job_id: int, *, offset: int | None = None, tail: int | None = None) -> dict:
    """``{"data", "offset", "state", "ended"}``: from byte ``offset``, or the last ``tail`` lines."""
    return c.call("GET", f"/v1/jobs/{int(job_id)}/logs",
                  params={"offset": None if offset is None else str(offset),
                          "tail": None if tail is None else str(tail)})


def job_cancel(c, job_id: int) -> dict:
    return c.call("POST", f"/v1/jobs/{int(job_id)}/cancel")


def job_rerun(c, job_id: int) -> dict:
    return c.call("POST", f"/v1/jobs/{int(job_id)}/rerun")


# --------------------------------------------------------------------------- running the lab (admins)


def admin_reload(c) -> dict:
    """Re-read the config: ``{"changed": [...], "restart_required": [...]}``; invalid: ConfigError."""
    return c.call("POST", "/v1/admin/reload", {})


def admin_limits(c, *, user: str | None = None, group: str | None = None) -> dict:
    return c.call("GET", "/v1/admin/limits", params={"user": user, "group": group})


def admin_limits_change(c, *, user: str | None = None, group: str | None = None, defaults: bool | None = None,
                        set: dict | None = None, unset: list[str] | None = None) -> dict:
    """Set/unset limits of one level in the config file (then reloaded): ``{"changes", "reload"}``."""
    return c.call("POST", "/v1/admin/limits", _body(user=user, group=group, defaults=defaults or None,
                                                    set=set or None, unset=unset or None))


def admin_users(c) -> list[dict]:
    return c.call("GET", "/v1/admin/users")


def admin_catalog_refresh(c, *, families: list[str] | None = None, registry: str | None = None,
                          dry_run: bool = False) -> dict:
    """Refresh the catalog overlay from registry tags: ``{"diff", "tags", "errors", …}``."""
    return c.call("POST", "/v1/admin/catalog/refresh",
                  _body(families=families or None, registry=registry, dry_run=dry_run or None))


def admin_cluster_sync(c, *, apply: bool = False) -> dict:
    """Cluster mode: ``{"slurm_conf": diff, "qos", "mapping", "applied", "notes", …}``."""
    return c.call("POST", "/v1/admin/cluster/sync", _body(apply=apply or None))


def admin_doctor(c) -> dict:
    """The daemon's checks of its own directories and files."""
    return c.call("GET", "/v1/admin/doctor")
