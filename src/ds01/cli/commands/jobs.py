"""Batch job commands (issue 14): submit, list, show, logs, cancel, rerun."""

from __future__ import annotations

import click

from ds01.cli.lazy import Client
from ds01.cli.options import json_opt
from ds01.cli.output import ago, echo, ok, print_json, table
from ds01.client import api


@click.command()
@click.argument("project")
@click.argument("command", nargs=-1, required=False, type=click.UNPROCESSED)
@click.option("--gpus", type=int, metavar="N", help="N whole GPUs (default: none)")
@click.option("--gpu-profile", metavar="PROFILE", help="one MIG instance of PROFILE, e.g. 3g.40gb")
@click.option("--mig", type=int, metavar="N", help="N MIG instances (smallest that fit)")
@click.option("--time", "time_", metavar="DURATION", help="time limit, e.g. 30m or 4h (default and cap: your max runtime)")
@click.option("--name", metavar="NAME", help="a name for the job (shown in listings and messages)")
@click.option("--array", metavar="SPEC", help="one task per index, e.g. 0-9 or 0-9%2 (at most 2 running)")
@click.option("--after", metavar="JOB[,JOB]", help="start only after these jobs succeeded")
@click.option("--env", "env", multiple=True, metavar="K=V", help="an environment variable (repeatable)")
@click.option("--requeue", is_flag=True, help="queue it again if the container engine restarts under it")
@click.option("--mail/--no-mail", default=None, help="also mail me when it ends (needs the admin's notify.smtp; "
              "default: mail_on_job_end in ~/.config/ds01/config.yaml)")
@json_opt
def submit(project: str, command: tuple[str, ...], gpus: int | None, gpu_profile: str | None, mig: int | None,
           time_: str | None, name: str | None, array: str | None, after: str | None, env: tuple[str, ...],
           requeue: bool, mail: bool | None, as_json: bool) -> None:
    """Run COMMAND as a batch job in a fresh container of PROJECT's image; prints the job id
    and returns at once. The job waits in the fair queue for its GPUs, runs as you with
    /workspace, and its output is kept ('job-logs ID'). Put the command after --.

    When the project's Dockerfile or requirements.txt changed, the image is built first, as
    project-launch does (its output on stderr; a failed build submits nothing, exit 11), and the
    job runs exactly that build.

    \b
    Example:
      job-submit thesis -- python train.py --epochs 10
      job-submit thesis --gpus 1 --time 4h --name sweep --array 0-9%2 -- python sweep.py
      job-submit thesis --after 12 -- python evaluate.py
    """
    from ds01.cli.options import gpu_request
    from ds01.errors import InvalidInput

    deps = []
    for part in (after or "").split(","):
        if part.strip():
            if not part.strip().isdigit():
                raise InvalidInput(f"--after {after!r}: job ids are numbers, separated by commas")
            deps.append(int(part))
    if not command:
        raise InvalidInput("the job has no command", f"put it after --: job-submit {project} -- python train.py")
    gpu = gpu_request(gpus, gpu_profile, mig)
    mail_default = None
    if mail is None:
        from ds01.cli import user_config

        mail_default = user_config.load()["mail_on_job_end"] or None
    image_id = _built_image(project, as_json)
    out = api.job_submit(Client(), project, list(command), time=time_, name=name, array=array, after=deps,
                         env=list(env), requeue=requeue or None, mail=mail or None, mail_default=mail_default,
                         image_id=image_id, **gpu)
    if as_json:
        return print_json(out)
    if mail_default and not out.get("mail"):
        echo("note: this host has no mail relay (notify.smtp), so no mail will be sent "
             "(mail_on_job_end in ~/.config/ds01/config.yaml)", err=True)
    ids = out["ids"]
    if len(ids) == 1:
        echo(str(ids[0]))
    else:
        echo(f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ",".join(map(str, ids)))


def _built_image(project: str, as_json: bool) -> str | None:
    """Build the project image first when the project changed, with project-launch's decision
    (``ds01.projects.stamps.stamp_verdict``, then the daemon's own check); the id of the image
    it built or confirmed, or None when nothing changed (or there is no Dockerfile: the job runs
    the project's image, else the lab's default, as container-create). The build's output goes
    to stderr, so stdout stays the job id (``JOB=$(job-submit ...)``)."""
    import contextlib
    import sys

    from ds01.cli import workspaces
    from ds01.cli.verbs import unchanged_image

    ws = workspaces.directory(project)
    if not (ws / "Dockerfile").is_file() or unchanged_image(project, str(ws)) is not None:
        return None  # (a deploy by name finds the current build, as project-launch's fast path)
    from ds01.cli.launching import ensure_image
    from ds01.projects.stamps import read_stamp

    with contextlib.redirect_stdout(sys.stderr):
        ensure_image(project, ws, False, False, as_json)  # BuildFailed: exit 11, nothing submitted
    image_id = (read_stamp(project) or {}).get("image_id")
    return image_id if isinstance(image_id, str) and image_id.startswith("sha256:") else None


def _fmt_time(j: dict) -> str:
    from ds01.units import format_duration

    if j["started_at"] is None:
        return "-"
    end = j["ended_at"]
    if end is None:
        return ago(j["started_at"]).replace(" ago", "")
    return format_duration(end - j["started_at"])


@click.command()
@click.option("--all", "all_", is_flag=True, help="ended jobs too (default: queued and running)")
@click.option("--state", metavar="STATE", help="only jobs in STATE (queued, running, succeeded, failed, ...)")
@click.option("--all-users", is_flag=True, help="(admins) everyone's jobs")
@json_opt
def list_(all_: bool, state: str | None, all_users: bool, as_json: bool) -> None:
    """Your jobs: queued and running (--all: ended ones too).

    \b
    Example:
      job-list
      job-list --all --state failed
    """
    rows = api.jobs(Client(), all=all_, state=state, all_users=all_users)
    if as_json:
        return print_json(rows)
    table(["id", "user", "project", "name", "state", "gpus", "submitted", "run time", "reason"],
          ([j["id"], j["user"], j["project"], j["name"] or "", j["state"] + (f"[{j['array_index']}]"
            if j["array_index"] is not None else ""), j["request"], ago(j["submitted_at"]), _fmt_time(j),
            j["reason"] or ""] for j in rows),
          empty="no jobs" + ("" if all_ or state else " queued or running ('job-list --all' shows ended ones)"))


@click.command()
@click.argument("job_id", type=int)
@json_opt
def show(job_id: int, as_json: bool) -> None:
    """Everything recorded about job JOB_ID: state and reason, command, image id, git commit.

    \b
    Example:
      job-show 12
    """
    j = api.job(Client(), job_id)
    if as_json:
        return print_json(j)
    from ds01.units import format_duration

    git = "-" if not j["git_commit"] else j["git_commit"][:12] + (" (dirty)" if j["git_dirty"] else "")
    rows = [("job", j["id"]), ("name", j["name"] or "-"), ("user", j["user"]), ("project", j["project"]),
            ("state", j["state"]), ("reason", j["reason"] or "-"), ("exit code", j["exit_code"]),
            ("command", " ".join(j["command"])), ("image", j["image"]), ("image id", j["image_id"] or "-"),
            ("git commit", git), ("GPUs", ", ".join(j["gpus"]) or j["request"]),
            ("time limit", "-" if not j["time_limit"] else format_duration(j["time_limit"])),
            ("array", "-" if j["array_index"] is None else f"task {j['array_index']} of {j['array_id']}"),
            ("after", ", ".join(map(str, j["after"])) or "-"), ("submitted", ago(j["submitted_at"])),
            ("started", ago(j["started_at"])), ("ended", ago(j["ended_at"])), ("run time", _fmt_time(j))]
    for k, v in rows:
        echo(f"{k + ':':<12} {'-' if v is None else v}")


@click.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="keep printing as the job writes, until it ends")
@click.option("--tail", type=click.IntRange(0), metavar="N", help="only the last N lines")
def logs(job_id: int, follow: bool, tail: int | None) -> None:
    """The output (stdout and stderr) of job JOB_ID, while it runs and after.

    \b
    Example:
      job-logs 12
      job-logs 12 -f
    """
    import sys
    import time

    c = Client()
    out = api.job_logs(c, job_id, tail=tail) if tail is not None else api.job_logs(c, job_id, offset=0)
    while True:
        if out["data"]:
            sys.stdout.write(out["data"])
            sys.stdout.flush()
        if not follow or (out["ended"] and not out["data"]):
            return
        if not out["data"]:
            time.sleep(0.5)
        out = api.job_logs(c, job_id, offset=out["offset"])


@click.command()
@click.argument("job_ids", nargs=-1, required=True, type=int)
@json_opt
def cancel(job_ids: tuple[int, ...], as_json: bool) -> None:
    """Cancel jobs (queued: at once; running: SIGTERM, then kill after the grace).

    \b
    Example:
      job-cancel 12 13
    """
    c = Client()
    results = [api.job_cancel(c, j) for j in job_ids]
    if as_json:
        return print_json(results)
    for r in results:
        ok(f"job {r['id']}: {r['state']}")


@click.command()
@click.argument("job_id", type=int)
@json_opt
def rerun(job_id: int, as_json: bool) -> None:
    """Run job JOB_ID again: the same image id, command, variables and resources.

    \b
    Example:
      job-rerun 12
    """
    out = api.job_rerun(Client(), job_id)
    if as_json:
        return print_json(out)
    echo(str(out["id"]))
