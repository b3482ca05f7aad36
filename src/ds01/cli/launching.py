"""The steps of ``project-launch`` after the "nothing changed" check: build the image when
needed, replace a container that has the previous image, start JupyterLab."""

from __future__ import annotations

from pathlib import Path

import click

from ds01.cli.lazy import Client
from ds01.cli.output import info, ok
from ds01.cli.prompts import ask
from ds01.cli.verbs import is_tty
from ds01.client import api

JUPYTER_PORT = 8888


def image_view(project: str) -> dict | None:
    """The daemon's view of the project image, or None when there is none."""
    from ds01.errors import NotFound

    try:
        return api.image(Client(), project)
    except NotFound:
        return None


def ensure_image(project: str, ws: Path, rebuild: bool, no_cache: bool, as_json: bool) -> tuple[str, bool]:
    """Build the project image when needed (see ds01.projects.launch); returns (image, whether
    the project's container, if any, runs an earlier build of it: rebuilt now, or by
    image-create / image-update since)."""
    from ds01.cli.building import build
    from ds01.projects.launch import (Stamp, client_hash, decide_build, file_signature, hash_covers_build, load_stamp,
                                      save_stamp)
    from ds01.projects.requirements import sync_dockerfile

    if sync_dockerfile(ws) and not as_json:  # copies what requirements.txt names (exit 3: a file is missing)
        ok("updated the Dockerfile: it copies the project files requirements.txt names")
    # size+mtime first, then the contents: an edit in between makes the next launch re-hash
    signature = file_signature(str(ws))
    text = (ws / "Dockerfile").read_text(errors="replace")
    req_p = ws / "requirements.txt"
    req = req_p.read_bytes() if req_p.is_file() else None
    current = client_hash(text, req)
    img = image_view(project)
    covers = hash_covers_build(text)
    d = decide_build(img, load_stamp(project), current, str(ws), covers, rebuild or no_cache)
    if not d.build:
        save_stamp(project, Stamp(current, str(img.get("id")), str(ws), signature, covers))
        if not as_json:
            ok(f"image {img['image']} is up to date ({d.reason})")
        return img["image"], project in (img.get("outdated") or ())
    if not as_json:
        info(f"building the image: {d.reason}")
    res = build(project, no_cache=no_cache, as_json=as_json)
    save_stamp(project, Stamp(current, str(res.get("id")), str(ws), signature, covers))
    if not as_json:
        if res.get("up_to_date"):
            ok(f"image {res['image']} is up to date (nothing changed)")
        else:
            ok(f"built {res['image']} in {res.get('seconds', 0):.1f} s")
    return res["image"], project in (res.get("outdated") or ()) or not res.get("up_to_date")


def replace_outdated(project: str, yes: bool, as_json: bool) -> None:
    """The project's existing container has an earlier build of the image: retire it when the
    user agrees (on a terminal it asks; --yes), else keep it and say how to replace it. The
    launch stamp remembers a kept one, so the next launch asks again (also on the fast path)."""
    from ds01.cli.verbs import find_container
    from ds01.projects.stamps import mark_recheck

    rec = find_container(project, missing_ok=True)
    if rec is None:
        return
    state = "running" if rec.get("status") == "running" else "stopped"
    question = f"your {state} container of {project} still has the previous image; replace it (workspace kept)?"
    agree = yes
    if not yes and is_tty() and not as_json:
        import questionary

        agree = ask(questionary.confirm(question, default=True))
    if agree:
        from ds01.cli.verbs import checked

        # agreeing to a new image is not agreeing to kill running work: that asks on its own
        checked(lambda check: api.container_retire(Client(), project, check_work=check), yes)
        if not as_json:
            ok(f"retired the old container of {project}")
        return
    mark_recheck(project)
    if not as_json:
        click.secho(f"  note: reusing your {state} container with the previous image; to use the new one: "
                    f"project-launch {project} --yes   (or: container-retire {project} && project-launch {project})",
                    fg="yellow")


# --------------------------------------------------------------------------- JupyterLab

JUPYTER_CHECK = "python3 -c 'import jupyterlab' >/dev/null 2>&1"
# The token comes on stdin, so it is never on a command line (other users can read those).
# By default JupyterLab listens on the container's own loopback: nothing on the host reaches it,
# only an `ssh -L` through container-ssh (its sshd connects from inside). --publish-local listens
# on every interface of the container so the port published on the host's 127.0.0.1 reaches it.
JUPYTER_START = f"""\
read -r JUPYTER_TOKEN; export JUPYTER_TOKEN
if [ -f /tmp/ds01-jupyter.pid ]; then kill "$(cat /tmp/ds01-jupyter.pid)" 2>/dev/null && sleep 1; fi
nohup python3 -m jupyterlab --ip="$1" --port={JUPYTER_PORT} --no-browser \
  --ServerApp.root_dir=/workspace >/tmp/ds01-jupyter.log 2>&1 </dev/null &
echo $! >/tmp/ds01-jupyter.pid
"""
JUPYTER_WAIT = f"""\
import sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:{JUPYTER_PORT}/api", timeout=2); sys.exit(0)
    except Exception:
        time.sleep(0.5)
sys.stdout.write(open("/tmp/ds01-jupyter.log", errors="replace").read()[-2000:]); sys.exit(1)
"""


def start_jupyter(project: str, record: dict, as_json: bool, publish_local: bool = False) -> dict:
    """Start JupyterLab in the container (background, random token) and print how to reach it:
    an ``ssh -L`` through ``container-ssh`` (``Host P.ds01``, see vscode-setup), or with
    ``publish_local`` the port the container publishes on the host's 127.0.0.1."""
    import secrets

    from ds01.cli.setup_checks import host_name
    from ds01.client.capture import capture_exec
    from ds01.errors import Conflict, NotFound, RuntimeFailure
    from ds01.projects.launch import host_port
    from ds01.projects.workspace import current_user

    port = host_port(record, JUPYTER_PORT) if publish_local else JUPYTER_PORT
    if port is None:
        raise Conflict(f"your running container of {project} was started without a port for JupyterLab",
                       f"replace it: container-retire {project} && project-launch {project} --jupyter")
    if capture_exec(project, ["sh", "-c", JUPYTER_CHECK]).code != 0:
        raise NotFound(f"JupyterLab is not installed in the image of {project}",
                       f"add it: image-update {project} --add jupyterlab   then: project-launch {project} --jupyter")
    token = secrets.token_urlsafe(24)
    ip = "0.0.0.0" if publish_local else "127.0.0.1"
    capture_exec(project, ["sh", "-c", JUPYTER_START, "sh", ip], stdin=(token + "\n").encode())
    res = capture_exec(project, ["python3", "-c", JUPYTER_WAIT], timeout=90)
    if res.code != 0:
        raise RuntimeFailure("JupyterLab did not start in the container; its log ends with:\n" + res.text[-1500:],
                             f"look inside with: container-run {project} -- cat /tmp/ds01-jupyter.log")
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    if publish_local:
        ssh = f"ssh -N -L {port}:127.0.0.1:{port} {current_user()[0]}@{host_name()}"
    else:
        ssh = f"ssh -N -L {port}:127.0.0.1:{port} {project}.ds01"
    if not as_json:
        ok(f"JupyterLab is running in {project}")
        click.echo(f"  1. on your laptop, forward the port (leave it open):\n       {ssh}")
        click.echo(f"  2. then open:  {url}")
        if publish_local:
            click.echo("  (published on this server's 127.0.0.1: every local user can reach it; the token is "
                       "your password: do not share the URL)")
        else:
            click.echo(f"  (it listens inside the container only; '{project}.ds01' is the ssh config block "
                       f"'vscode-setup {project}' prints; the token is your password)")
    return {"port": port, "url": url, "ssh": ssh, "published": publish_local}
