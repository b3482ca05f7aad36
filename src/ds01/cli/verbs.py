"""The bodies of the hottest commands, free of click.

The click commands (``ds01.cli.commands.*``) parse options and call these; so does the fast path
(``ds01.cli.fast``), which runs the plain forms without importing click at all. One body, so the
two paths cannot print different things.
"""

from __future__ import annotations

import os
import sys

# typing is only for annotations (strings here): importing it costs every CLI start ~5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from ds01.cli.lazy import Client
from ds01.cli.output import ago, colour, echo, ok, print_json, table
from ds01.client import api


# --------------------------------------------------------------------------- L2 containers


def print_queued(out: dict) -> None:
    ok(f"no device is free now: {out['request']} for {out['project']} is queued "
       f"(position {out['position']}, request id {out['queue_id']})")
    echo("  it starts automatically when devices free up; watch it with 'gpu-queue'")


def create(project: str, *, image: str | None = None, cpu_only: bool = False, gpu: dict | None = None,
           queue: bool | None = None, user: str | None = None, as_json: bool = False) -> None:
    """``container-create``; ``gpu`` is :func:`ds01.cli.options.gpu_request`'s dict."""
    if image and not as_json:
        pull_first(image)
    out = api.container_create(Client(), project, image=image, cpu_only=cpu_only, queue=queue, user=user,
                               **(gpu or {}))
    if as_json:
        return print_json(out)
    if out.get("queued"):
        return print_queued(out)
    gpus_txt = f", GPUs {', '.join(out['gpus'])}" if out.get("gpus") else ""
    ok(f"created container {out['name']} for project {project} (image {out['image']}{gpus_txt})")
    echo(f"  workspace: {out['workspace']} → /workspace")
    echo(f"  next: container-start {project}   or   container-run {project}")


DONE = {
    "start": "container {name} is running",
    "stop": "container {name} is stopped",
    "remove": "container {name} removed (workspace {workspace} kept)",
}


def verb(name: str, project: str, as_json: bool = False, yes: bool = False, **options: Any) -> dict:
    """``container-{start,stop,remove}``: one call, one line. Options left at None are not sent
    (the daemon's defaults are the same). ``stop`` first asks about running work unless ``yes``
    (:func:`checked`)."""
    call = getattr(api, f"container_{name}")
    if name == "stop":
        out = checked(lambda check: call(Client(), project, check_work=check, **options), yes)
    else:
        out = call(Client(), project, **options)
    if as_json:
        print_json(out)
    else:
        ok(DONE[name].format(**out))
        if name == "stop" and out.get("gpus"):
            echo(gpu_hold_text(project, out))
    return out


def gpu_hold_text(project: str, out: dict) -> str:
    """How long a stopped container's GPUs stay reserved (the daemon's ``gpus_held_for``)."""
    from ds01.units import format_duration

    held = out.get("gpus_held_for")
    gpus = ", ".join(out["gpus"])
    if held is None:
        return f"  its GPUs ({gpus}) stay reserved for a while; 'container-retire {project}' frees them now"
    if not held:
        return f"  its GPUs ({gpus}) are released now"
    return (f"  its GPUs ({gpus}) stay reserved for you for {format_duration(held)}: 'container-start {project}' "
            f"within that gets them back; 'container-retire {project}' frees them now")


def checked(call, yes: bool) -> dict:
    """``call(check_work)`` for stop/retire: unless ``yes``, the daemon first refuses when
    processes other than shells run in the container (Conflict, ``details.processes``, its
    message lists them). On a terminal the user is asked whether to kill them; a script gets the
    refusal, whose hint names ``--yes``."""
    if yes:
        return call(None)
    from ds01.errors import Conflict, DS01Error

    try:
        return call(True)
    except Conflict as e:
        if not (e.details or {}).get("processes") or not is_tty():
            raise
        echo(e.message)
        try:
            answer = input("stop the container anyway and kill them? [y/N] ").strip().lower()
        except EOFError:
            answer = ""
        if answer not in ("y", "yes"):
            raise DS01Error("not stopped: the processes keep running", e.hint) from None
        return call(None)


def list_containers(*, show_all: bool = False, all_users: bool = False, user: str | None = None,
                    as_json: bool = False) -> None:
    rows = api.containers(Client(), all_users=all_users, user=user, running=not show_all)
    if as_json:
        return print_json(rows)
    cols = ["project", "status", "image", "gpus", "created", "name"]
    if all_users or user:
        cols.insert(0, "user")
    nodes = any(r.get("node") for r in rows)  # cluster mode: where each one runs
    if nodes:
        cols.insert(cols.index("gpus"), "node")
    table(cols, ([r["user"]] * bool(all_users or user) + [
        r["project"], r["status"], r["image"], *([r.get("node") or "-"] if nodes else []),
        ",".join(r["gpus"]) or "-", ago(r["created_at"]), r["name"]]
        for r in rows), empty="no containers" + ("" if show_all else " running (--all shows stopped ones)"))


def find_container(project: str, *, missing_ok: bool = False) -> dict | None:
    """The caller's container record for PROJECT (running or not). None when there is none and
    ``missing_ok``; else NotFound."""
    for r in api.containers(Client()):
        if r.get("project") == project:
            return r
    if missing_ok:
        return None
    from ds01.errors import NotFound

    raise NotFound(f"project {project!r} has no container", "'container-list --all' shows your containers")


# --------------------------------------------------------------------------- L3 deploy


def pull_first(image: str) -> None:
    """Show the pull of a missing ``--image`` (per-layer progress) before the container call,
    which would otherwise pull it silently; an image already here answers at once. Refusals
    (not allowed, not found, registry down) come from this call with the pull's own message."""
    from ds01.cli.pulling import PullView

    view = PullView()
    try:
        for ev in api.image_pull(Client(), image):  # an {"error"} line raises in the client
            if "pulled" in ev and (ev["pulled"] or {}).get("present"):
                continue  # nothing to show: it was already on this host
            view.event(ev)
    finally:
        view.close()


def deploy(project: str, *, image: str | None = None, gpu: dict[str, Any] | None = None, queue: bool = False,
           ports: list[int] | None = None, cpu_only: bool = False, user: str | None = None) -> dict[str, Any]:
    """One call to the daemon's deploy: create + start (rollback on failure), or reuse the
    project's container. Returns the record, ``{"reused": true, …}`` or ``{"queued": true, …}``."""
    return api.container_deploy(Client(), project, image=image or None, queue=queue or None, ports=ports,
                                cpu_only=cpu_only or None, user=user, **(gpu or {}))


def report_deploy(project: str, out: dict[str, Any]) -> None:
    """Human summary of a deploy result (not for --json)."""
    if out.get("queued"):
        echo(colour("⏳ ", "yellow") + f"no GPU is free right now: you are number "
             f"{out.get('position', '?')} in the queue for project {project}")
        echo("  your container starts as soon as a GPU is free; watch it with: gpu-queue")
        return
    gpus = ", ".join(out.get("gpus") or []) or "none (CPU only)"
    if out.get("reused"):
        ok(f"your container for {project} is already running: reusing it ({out.get('name')})")
    else:
        ok(f"container {out.get('name')} is running (image {out.get('image')})")
    echo(f"  GPUs: {gpus}")
    if out.get("workspace"):
        echo(f"  workspace: {out['workspace']} → /workspace")


def is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def should_open(open_: bool | None, as_json: bool) -> bool:
    """``--open``/``--background`` when given; otherwise open only on a terminal (and never for --json)."""
    if open_ is not None:
        return open_
    return is_tty() and not as_json


def next_steps(project: str) -> None:
    echo(f"  next: container-run {project}   (a shell)   or   container-retire {project}   (when done)")


def finish_background(project: str, out: dict[str, Any], as_json: bool) -> None:
    """What ``container-deploy``/``project-launch --background`` print after the deploy."""
    if as_json:
        print_json(out)
        return
    report_deploy(project, out)
    if not out.get("queued"):
        next_steps(project)


# --------------------------------------------------------------------------- L4 launch, unchanged


def unchanged_image(project: str, ws: str) -> str | None:
    """The project image's name when the Dockerfile and requirements.txt are what this account
    last built or confirmed (the stamp) and nothing else goes into the image; else None
    (:func:`ds01.projects.stamps.stamp_verdict`, without asking the daemon)."""
    from ds01.names import image_name
    from ds01.projects.stamps import REQUIREMENTS, file_signature, read_stamp, stamp_verdict
    from ds01.projects.workspace import current_user

    def current() -> tuple[str, bool]:
        from ds01.projects.launch import client_hash, hash_covers_build

        with open(os.path.join(ws, "Dockerfile"), encoding="utf-8", errors="replace") as f:
            text = f.read()
        req_p = os.path.join(ws, REQUIREMENTS)
        req = None
        if os.path.isfile(req_p):
            with open(req_p, "rb") as fb:
                req = fb.read()
        return client_hash(text, req), hash_covers_build(text)

    try:
        if stamp_verdict(read_stamp(project), ws, current, signature=file_signature(ws)) is not None:
            return None
    except OSError:
        return None
    return f"{image_name(current_user()[0], project, os.getuid())}:latest"


def launch_unchanged(project: str, ws: str, *, gpu: dict | None = None, queue: bool = False,
                     ports: list[int] | None = None, as_json: bool = False) -> dict | None:
    """Deploy straight away (one daemon call, like container-deploy) when nothing changed since
    the last build this account ran or confirmed; None when the image must be checked first
    (or vanished), and then nothing was done or printed."""
    from ds01.errors import NotFound

    known = unchanged_image(project, ws)
    if known is None:
        return None
    try:
        out = deploy(project, image=known, gpu=gpu, queue=queue, ports=ports)
    except NotFound:
        return None
    if not as_json:
        ok(f"image {known} is up to date (nothing changed since the last build)")
    return out
