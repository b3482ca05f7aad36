"""Batch jobs (issue 14): submit, list, show, logs, cancel, rerun. The running half (start,
follow, end, recovery) is :class:`ds01.services.job_runner.JobRunner`.

Each method acts on the caller's own jobs; another user's job is reported exactly like a
missing one. Admins see and cancel everyone's. Every refusal happens before any record exists.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from ds01 import labels as label_keys
from ds01.errors import Conflict, InvalidInput, NotFound, PolicyDenied
from ds01.models.gpu import GpuRequest
from ds01.names import image_name, validate_project
from ds01.policy import jobs as P
from ds01.policy.allocation import Allocation, decide
from ds01.services.identity import Caller
from ds01.services.job_runner import JobRunner
from ds01.services.workspace import _gids, existing_workspace
from ds01.state.jobs import JobRecord

MAX_LOG_READ = 1024 * 1024


def job_view(j: JobRecord) -> dict[str, Any]:
    return {
        "id": j.id, "name": j.name, "user": j.user, "uid": j.uid, "project": j.project, "state": j.state,
        "reason": j.reason, "command": j.command, "env": j.env, "request": GpuRequest.from_dict(j.request).describe(),
        "gpus": j.gpus, "time_limit": j.time_limit, "image": j.image, "image_id": j.image_id,
        "git_commit": j.git_commit, "git_dirty": j.git_dirty, "array_id": j.array_id, "array_index": j.array_index,
        "array_throttle": j.array_throttle, "after": j.after, "requeue": j.requeue, "mail": j.mail,
        "submitted_at": j.submitted_at, "started_at": j.started_at, "ended_at": j.ended_at,
        "exit_code": j.exit_code, "container": j.docker_name if j.state in P.ACTIVE else None,
        "rerun_of": j.rerun_of,
    }


def git_state(who: Caller, path: str) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty: tracked files changed) of the workspace, read *as the user* (never
    root in user files);
    (None, None) when it is not a git repository or git does not answer in time."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def git(*args: str) -> subprocess.CompletedProcess:
        # (no fsmonitor: nothing from the repository's config is run)
        return subprocess.run(["git", "-c", "core.fsmonitor=false", "-C", path, *args], user=who.uid, group=who.gid, extra_groups=_gids(who),
                              capture_output=True, text=True, timeout=5, cwd="/", env=env)

    try:
        head = git("rev-parse", "--verify", "-q", "HEAD")
        if head.returncode != 0:
            return None, None
        # tracked changes only: untracked data and outputs are normal in a workspace
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip() or None, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


class JobService(JobRunner):
    # -- lookups ---------------------------------------------------------------------------
    def _own(self, who: Caller, job_id: int) -> JobRecord:
        job = self.ctx.store.get_job(job_id)
        if job is None or (job.uid != who.uid and not who.is_admin):
            raise NotFound(f"you have no job {job_id}", "'job-list --all' lists your jobs")
        return job

    # -- submit ----------------------------------------------------------------------------
    def submit(self, who: Caller, project: str, command: list[str], *, request: GpuRequest | None = None,
               time: str | None = None, name: str | None = None, array: str | None = None,
               after: list[int] | None = None, env: dict[str, str] | list[str] | None = None,
               requeue: bool = False, mail: bool = False, mail_default: bool = False,
               image_id: str | None = None) -> dict[str, Any]:
        """Queue a job (or one per array task); returns at once with the ids.

        ``image_id``: the project image the CLI just built for this job (``job-submit`` builds
        first when the project changed); it must be the caller's image of this project, so a
        rebuild racing the submit cannot swap what runs. ``mail_default``: the user's config asks
        for mail (``mail_on_job_end``): on when this host can mail, else off (``--mail`` refuses)."""
        project = validate_project(project)
        cmd = P.check_command(command)
        lim = self._limits(who)
        request = request or GpuRequest()
        limit = P.parse_time(time, lim.max_runtime)
        spec = P.parse_array(array, self.cfg.jobs.max_array_tasks) if array else None
        variables = P.parse_env(env or [])
        deps = self._check_after(who, after or [])
        self._check_request(request, lim)
        if mail and self.cfg.notify.smtp is None:
            raise InvalidInput("--mail: this host has no mail relay configured",
                               "ask an admin to set notify.smtp, or leave --mail out")
        mail = mail or (mail_default and self.cfg.notify.smtp is not None)
        workspace = existing_workspace(who, project, self.cfg.containers.workspace_base)
        if workspace is None:
            raise NotFound(f"you have no project {project!r}", f"create it with 'project-init {project}'")
        image, image_id = self._image(who, project, image_id)
        commit, dirty = git_state(who, workspace)
        return self._insert(who, project, cmd, request, limit, name, spec, deps, variables, requeue, mail,
                            image, image_id, commit, dirty, rerun_of=None)

    def _insert(self, who, project, cmd, request, limit, name, spec, deps, variables, requeue, mail, image,
                image_id, commit, dirty, rerun_of, task: tuple | None = None) -> dict[str, Any]:
        """One row per array task of ``spec``; or, without one, a single row, which ``task`` =
        ``(array_id, index, throttle)`` makes a task of an existing array (a rerun)."""
        lim = self._limits(who)
        indices = spec.indices if spec else ((task[1] if task else None),)
        now = self.ctx.clock()
        ids: list[int] = []
        with self.ctx.store.transaction() as tx:
            queued = self.ctx.store.count_jobs(who.uid, (P.QUEUED,), tx)
            if queued + len(indices) > lim.max_jobs_queued:
                raise PolicyDenied(
                    f"you have {queued} queued job(s); {len(indices)} more would pass your limit of "
                    f"{lim.max_jobs_queued}", "wait for some to start, or cancel some with 'job-cancel ID'")
            array_id = None
            for idx in indices:
                jid = self.ctx.store.insert_job(
                    tx, uid=who.uid, user=who.name, project=project, name=name, state=P.QUEUED, command=list(cmd),
                    env=variables, request=request.to_dict(), time_limit=limit, image=image, image_id=image_id,
                    git_commit=commit, git_dirty=dirty, array_index=idx,
                    array_throttle=spec.throttle if spec else (task[2] if task else None), after=deps,
                    requeue=requeue, mail=mail, submitted_at=now, rerun_of=rerun_of)
                if spec is not None:
                    array_id = array_id or jid
                    self.ctx.store.update_job(jid, tx, array_id=array_id)
                elif task is not None and task[0] is not None:
                    self.ctx.store.update_job(jid, tx, array_id=task[0])
                ids.append(jid)
        self.ctx.emit("job.submit", who, project, data={"jobs": ids, "command": list(cmd)[:8],
                                                         "request": request.to_dict()})
        self._wake()  # served by the next tick, which this starts now
        return {"id": ids[0], "ids": ids, "array_id": ids[0] if spec else (task[0] if task else None),
                "state": P.QUEUED, "project": project, "image": image, "image_id": image_id,
                "git_commit": commit, "mail": bool(mail)}

    def _check_after(self, who: Caller, after: list[int]) -> list[int]:
        out = []
        for jid in after:
            if not isinstance(jid, int) or isinstance(jid, bool):
                raise InvalidInput(f"--after {jid!r} is not a job id")
            job = self.ctx.store.get_job(jid)
            if job is None or job.uid != who.uid:
                raise NotFound(f"--after {jid}: you have no job {jid}", "'job-list --all' lists your jobs")
            out.append(jid)
        return sorted(set(out))

    def _check_request(self, request: GpuRequest, lim) -> None:
        """Refuse now what could never start (invalid on this host, or over the user's limits
        even with nothing held); a busy machine only means waiting."""
        if request.kind == "none":
            return
        outcome = decide(self.ctx.inventory, {}, request, lim, 0.0)
        if not isinstance(outcome, Allocation) and outcome.kind != "capacity":
            raise outcome.to_error()

    def _image(self, who: Caller, project: str, image_id: str | None = None) -> tuple[str, str | None]:
        """The project's built image, else the lab default (as container-create); and its id.
        With ``image_id``: that image, which must be ``who``'s build of ``project`` (else it is
        reported as missing, like another user's image)."""
        image, local = (None, None)
        if self.images is not None:
            image, local = self.images.project_image(who, project)
        if image_id is not None:
            if local is None or local.id != image_id:
                info = self.ctx.runtime.image_inspect(image_id) if P.IMAGE_ID.match(image_id) else None
                labels = info.labels if info is not None else {}
                if info is None or info.id != image_id or labels.get(label_keys.MANAGED) != "true" or \
                        labels.get(label_keys.UID) != str(who.uid) or labels.get(label_keys.PROJECT) != project:
                    raise NotFound(f"image {image_id[:19]} is not an image of your project {project!r}",
                                   f"submit again: 'job-submit {project} -- ...' builds it when needed")
            return image or f"{image_name(who.name, project, who.uid)}:latest", image_id
        image = image or self.cfg.images.default
        self.containers._check_image(image)
        if local is None:
            local = (self.images.check_use(who, image) if self.images is not None
                     else self.ctx.runtime.image_inspect(image))
        if local is None:
            raise NotFound(f"image {image!r} is not available on this host",
                           f"build your project's image with 'image-create {project}'")
        return image, local.id

    # -- views -----------------------------------------------------------------------------
    def list(self, who: Caller | None, include_ended: bool = False, state: str | None = None) -> list[dict]:
        if state is not None and state not in P.STATES:
            raise InvalidInput(f"--state {state!r} is not a job state", f"one of: {', '.join(P.STATES)}")
        states = (state,) if state else (None if include_ended else P.ACTIVE)
        return [job_view(j) for j in self.ctx.store.jobs(None if who is None else who.uid, states)]

    def show(self, who: Caller, job_id: int) -> dict[str, Any]:
        return job_view(self._own(who, job_id))

    def logs(self, who: Caller, job_id: int, offset: int | None = None, tail: int | None = None) -> dict[str, Any]:
        """A piece of the job's log: from byte ``offset`` (``-f`` polls with the returned
        offset), or its last ``tail`` lines; ``ended`` once nothing more will come."""
        job = self._own(who, job_id)
        path = self.log_path(job.id)
        ended = job.state in P.ENDED  # (-f on a queued job waits for it to run and end)
        with self._lock:
            ended = ended and job.id not in self._followers
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {"data": "", "offset": 0, "state": job.state, "ended": ended}
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if tail is not None:
                start = max(0, size - MAX_LOG_READ)
                f.seek(start)
                lines = f.read().splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
                return {"data": data.decode("utf-8", "replace"), "offset": size, "state": job.state,
                        "ended": ended}
            start = min(max(0, offset or 0), size)
            f.seek(start)
            data = f.read(MAX_LOG_READ)
        return {"data": data.decode("utf-8", "replace"), "offset": start + len(data), "state": job.state,
                "ended": ended and start + len(data) >= size}

    # -- changes ---------------------------------------------------------------------------
    def cancel(self, who: Caller, job_id: int) -> dict[str, Any]:
        job = self._own(who, job_id)
        if job.state in P.ENDED:
            raise Conflict(f"job {job_id} already ended ({job.state})", "'job-rerun' runs it again")
        if job.state == P.QUEUED:
            if not self.ctx.store.set_job_state(job.id, P.QUEUED, state=P.CANCELLED, reason="cancelled while queued",
                                                ended_at=self.ctx.clock()):
                return self.cancel(who, job_id)  # it started meanwhile
            self.ctx.emit("job.cancel", who, job.project, data={"job": job.id, "was": P.QUEUED})
            self._wake()  # a dependent fails, the next array task may start
            return {"id": job.id, "state": P.CANCELLED}
        self.ctx.store.set_job_state(job.id, job.state, requested="cancel")
        self.ctx.emit("job.cancel", who, job.project, data={"job": job.id, "was": job.state})
        job = self.ctx.store.get_job(job.id)
        if job is not None and job.state == P.RUNNING:
            self._stop_async(job)
        return {"id": job_id, "state": "cancelling"}

    def rerun(self, who: Caller, job_id: int) -> dict[str, Any]:
        """The same image id, command, variables, resources and time limit, as a new job."""
        job = self._own(who, job_id)
        owner = who if job.uid == who.uid else self._who(job.uid)
        image_id = job.image_id
        if image_id and self.ctx.runtime.image_inspect(image_id) is None:
            raise NotFound(f"the image job {job_id} ran ({image_id[:19]}) is no longer on this host",
                           f"submit it again with 'job-submit {job.project} -- ...' (the current image)")
        workspace = existing_workspace(owner, job.project, self.cfg.containers.workspace_base)
        if workspace is None:
            raise NotFound(f"you have no project {job.project!r}")
        commit, dirty = git_state(owner, workspace)
        # an array task stays that task: the same DS01_ARRAY_TASK_ID, under its array's %N
        task = (job.array_id, job.array_index, job.array_throttle) if job.array_index is not None else None
        return self._insert(owner, job.project, tuple(job.command), GpuRequest.from_dict(job.request),
                            job.time_limit, job.name, None, [], job.env, job.requeue, job.mail,
                            job.image, image_id, commit, dirty, rerun_of=job.id, task=task)

    # -- status ----------------------------------------------------------------------------
    def board(self) -> dict[str, Any]:
        """Everyone's running and queued jobs for ``ds01 status`` and the web page: who, what
        project, state, GPUs and times; never the command, variables or log (those are for the
        owner and admins). Running includes ``starting``; oldest first."""
        rows = sorted(self.ctx.store.jobs(None, P.ACTIVE), key=lambda j: j.id)
        view = [{"id": j.id, "user": j.user, "project": j.project, "name": j.name, "state": j.state,
                 "request": GpuRequest.from_dict(j.request).describe(), "gpus": j.gpus,
                 "array_index": j.array_index, "submitted_at": j.submitted_at, "started_at": j.started_at}
                for j in rows]
        return {"running": [v for v in view if v["state"] != P.QUEUED],
                "queued": [v for v in view if v["state"] == P.QUEUED]}

    def counts(self, uid: int) -> dict[str, int]:
        """The user's jobs against ``max_jobs_queued`` / ``max_jobs_running`` (``check-limits``)."""
        return {"jobs_queued": self.ctx.store.count_jobs(uid, (P.QUEUED,)),
                "jobs_running": self.ctx.store.count_jobs(uid, (P.STARTING, P.RUNNING))}
