"""L4 wizards: ``user-setup``, ``project-init``, ``project-launch``.

Each is interactive on a terminal (arrow-key prompts with the defaults shown) and fully drivable
by flags; ``--yes`` never asks. They only combine the building blocks: the project helpers
(``ds01.projects``), the image commands' helpers (``ds01.cli.commands.images``) and the L3
deploy (``ds01.cli.commands.workflows``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ds01.cli.commands.workflows import CTX, gpu_options, open_option
from ds01.cli.verbs import is_tty
from ds01.cli.output import info, ok, print_json
from ds01.cli.lazy import Client, q

# Kept equal to ds01.cli.commands.images.PRESET_NAMES (not imported: --help stays instant).
PRESETS = ("audio", "cv", "llm", "nlp", "rl", "tabular")
KINDS = ("data-science", "blank")
JUPYTER_PORT = 8888

REQUIREMENTS_TEMPLATE = """\
# Python packages for this project, one per line (pip's requirements format), e.g.
#   pandas
#   scikit-learn==1.5.2
# They are installed into the project's image: after editing, 'project-launch {project}'
# rebuilds the image (only when this file or the Dockerfile changed).
"""




def explain_opt(f):
    return click.option("--explain", is_flag=True, help="first explain containers, workspaces and images")(f)


def show_explain() -> None:
    from ds01.cli.commands.concepts import concepts_text

    click.echo(concepts_text())


def ask(question) -> Any:
    """Run a questionary question; Ctrl-C / Esc aborts the wizard (exit 130)."""
    answer = question.ask()
    if answer is None:
        raise click.exceptions.Abort()
    return answer


# =========================================================================== user-setup


@dataclass
class Check:
    """One line of the user-setup summary. ``ok`` None means "for information"."""

    name: str
    ok: bool | None
    detail: str
    fix: str | None = None


def render_summary(checks: list[Check]) -> str:
    """The ✓/✗ summary (plain text; pure)."""
    width = max((len(c.name) for c in checks), default=0)
    lines = ["Summary"]
    for c in checks:
        mark = {True: "✓", False: "✗", None: "·"}[c.ok]
        lines.append(f"  {mark} {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.ok is False:
            lines.append(f"    {' ' * width}  fix: {c.fix}")
    bad = sum(c.ok is False for c in checks)
    lines.append("All set." if not bad else f"{bad} thing{'s' * (bad != 1)} to fix (see 'fix:' above); "
                 "run user-setup again afterwards, it only changes what is missing.")
    return "\n".join(lines)


def limits_line(data: dict[str, Any]) -> str:
    """One line about the caller's limits from ``GET /v1/limits`` (``{limits, usage, group}``);
    any other flat dict is shown key by key."""
    from ds01.units import format_duration, format_size

    lim, use = data.get("limits"), data.get("usage") or {}
    if isinstance(lim, dict) and "max_gpus" in lim:
        parts = [f"GPUs {_num(use.get('gpus', 0))}/{_num(lim['max_gpus'])} in use",
                 f"containers {use.get('containers', 0)}/{lim.get('max_containers')}"]
        if lim.get("cpus"):
            parts.append(f"{_num(lim['cpus'])} CPUs and {format_size(int(lim.get('memory') or 0))} per container")
        if lim.get("max_runtime"):
            parts.append(f"max runtime {format_duration(float(lim['max_runtime']))}")
        if lim.get("idle_timeout"):
            parts.append(f"idle stop after {format_duration(float(lim['idle_timeout']))}")
        group = data.get("group") or lim.get("group")
        return ", ".join(parts) + (f" (group {group})" if group else "")
    parts = []
    for k, v in data.items():
        if isinstance(v, (dict, list)) or v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and any(
                w in k for w in ("memory", "shm", "bytes", "size")):
            v = format_size(int(v))
        parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts) or "none reported"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_workspace() -> Check:
    from ds01.projects.workspace import DIR_MODE, display_path, workspace_base

    base = workspace_base()
    shown = display_path(base)
    if base.is_dir():
        return Check("workspace", True, f"{shown} exists")
    if base.exists() or base.is_symlink():
        return Check("workspace", False, f"{shown} exists but is not a folder", f"move it away (mv {shown} {shown}.old)")
    base.mkdir(mode=DIR_MODE, parents=True)
    return Check("workspace", True, f"created {shown} (your projects live here)")


def check_daemon() -> tuple[Check, dict | None]:
    from ds01.errors import DS01Error

    try:
        me = Client().call("GET", "/v1/whoami")
    except DS01Error as e:
        return Check("daemon", False, e.message, e.hint or "ask an admin to start ds01d"), None
    role = " (admin)" if me.get("admin") else ""
    return Check("daemon", True, f"reachable; you are {me.get('user')}{role}"), me


def check_limits() -> Check:
    from ds01.errors import DS01Error, NotFound

    try:
        lim = Client().call("GET", "/v1/limits")
    except NotFound:
        return Check("limits", None, "this server does not report limits yet")
    except DS01Error as e:
        return Check("limits", None, f"could not read them ({e.message})")
    return Check("limits", None, limits_line(lim) if isinstance(lim, dict) else str(lim))


def _git_env() -> dict[str, str]:
    """git finds the global config through $HOME; set it from the password database if unset."""
    from ds01.projects.workspace import current_user

    return {"HOME": current_user()[1], **os.environ, "GIT_TERMINAL_PROMPT": "0"}


def host_name() -> str:
    """This server's name as a laptop would use it."""
    import socket

    fqdn = socket.getfqdn()
    return fqdn if fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def _git(*args: str) -> tuple[int, str]:
    import subprocess

    try:
        cp = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20,
                            stdin=subprocess.DEVNULL, env=_git_env())
    except FileNotFoundError:
        return 127, ""
    return cp.returncode, cp.stdout.strip()


def check_git(name: str | None, email: str | None, interactive: bool) -> Check:
    """Global git identity: set from the flags, else asked on a terminal, else reported."""
    from ds01.projects.git import _check_identity_value

    _check_identity_value("name", name)
    _check_identity_value("email", email)
    code, _ = _git("--version")
    if code == 127:
        return Check("git", False, "git is not installed", "ask an admin to install it (apt install git)")
    want = {"name": name, "email": email}
    have = {k: _git("config", "--global", "--get", f"user.{k}")[1] or None for k in want}
    changed = []
    for k in ("name", "email"):
        value = want[k]
        if value is None and not have[k] and interactive:
            import questionary

            value = ask(questionary.text(f"Your git {k} (for commit messages):",
                                         validate=lambda s: bool(s.strip()) or "please type something")).strip()
            _check_identity_value(k, value)
        if value is not None and value != have[k]:
            if _git("config", "--global", f"user.{k}", value)[0] != 0:
                return Check("git", False, f"could not set user.{k}", f"git config --global user.{k} '{value}'")
            have[k] = value
            changed.append(k)
    if not have["name"] or not have["email"]:
        return Check("git", False, "no name/e-mail for your commits",
                     "user-setup --git-name 'Ada Lovelace' --git-email ada@example.org "
                     "(or: git config --global user.name '…'; git config --global user.email '…')")
    what = "set" if changed else "ok"
    return Check("git", True, f"{have['name']} <{have['email']}> ({what})")


def _key_lines(path: Path) -> int:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(1 for ln in lines if ln.strip() and not ln.lstrip().startswith("#")
               and any(t.startswith(("ssh-", "ecdsa-", "sk-")) for t in ln.split()))


def check_ssh(home: Path) -> Check:
    """``~/.ssh/authorized_keys`` holds a key and sshd will accept its permissions."""
    ssh, keys = home / ".ssh", home / ".ssh" / "authorized_keys"
    n = _key_lines(keys)
    if n == 0:
        return Check("ssh key", False, "no key in ~/.ssh/authorized_keys yet",
                     "run the three laptop steps printed above")
    for p, mode in ((ssh, "700"), (keys, "600")):
        if p.stat().st_mode & 0o022:
            return Check("ssh key", False, f"{n} key(s), but ~/{p.relative_to(home)} is writable by others "
                         "(ssh then ignores it)", f"chmod {mode} ~/{p.relative_to(home)}")
    return Check("ssh key", True, f"{n} key(s) in ~/.ssh/authorized_keys")


def ssh_guidance(user: str, host: str) -> str:
    """Exact steps for VS Code Remote-SSH. Keys are made on the laptop, never on the server."""
    return f"""\
VS Code / SSH from your laptop (the key is made on your laptop; the server never sees it):
  1. make a key, once:        ssh-keygen -t ed25519
  2. copy it to this server:  ssh-copy-id {user}@{host}
  3. add to ~/.ssh/config on your laptop:
       Host ds01
           HostName {host}
           User {user}
           IdentityFile ~/.ssh/id_ed25519
  Then 'ssh ds01' works, and in VS Code: "Remote-SSH: Connect to Host..." → ds01,
  and open the folder ~/workspace/<project>."""


@click.command(context_settings=CTX)
@click.option("--yes", "-y", is_flag=True, help="never ask; report what is missing instead")
@click.option("--git-name", metavar="NAME", help="set your git name (git config --global user.name)")
@click.option("--git-email", metavar="EMAIL", help="set your git e-mail (git config --global user.email)")
@explain_opt
def user_setup(yes: bool, git_name: str | None, git_email: str | None, explain: bool) -> None:
    """Check your account once and fix what is missing, with a ✓/✗ summary.

    Checks: your ~/workspace folder (created if missing), that the DS01 daemon answers,
    your limits, your git name and e-mail, and an SSH key for VS Code Remote-SSH (you make
    the key on your laptop; this prints the steps). Safe to run again any time.

    \b
    Examples:
      user-setup
      user-setup --yes --git-name 'Ada Lovelace' --git-email ada@example.org
    """
    from ds01.projects.workspace import current_user

    if explain:
        show_explain()
    interactive = is_tty() and not yes
    user, home = current_user()
    checks = [check_workspace()]
    daemon, _me = check_daemon()
    checks.append(daemon)
    if daemon.ok:
        checks.append(check_limits())
    checks.append(check_git(git_name, git_email, interactive))
    ssh = check_ssh(Path(home))
    if not ssh.ok or explain:
        click.echo(ssh_guidance(user, host_name()))
        click.echo()
    checks.append(ssh)
    click.echo(_colour(render_summary(checks)))
    if interactive and daemon.ok:
        _offer_project_init()


def _colour(text: str) -> str:
    return (text.replace("  ✓ ", "  " + click.style("✓", fg="green") + " ")
                .replace("  ✗ ", "  " + click.style("✗", fg="red") + " "))


def _offer_project_init() -> None:
    import questionary

    from ds01.names import validate_project

    if not ask(questionary.confirm("Create a project now (project-init)?", default=False)):
        click.echo("Later: project-init <project>   ('ds01 concepts' explains the ideas)")
        return

    def valid(s: str) -> bool | str:
        try:
            validate_project(s)
            return True
        except Exception as e:  # InvalidInput
            return getattr(e, "message", str(e))

    name = ask(questionary.text("Project name:", default="thesis", validate=valid))
    click.get_current_context().invoke(project_init, project=name)


# =========================================================================== project-init


def framework_choices() -> tuple[list, str | None]:
    """questionary choices from the catalog (runnable ones first); value: ``F==VER`` or ""."""
    import questionary

    data = Client().call("GET", "/v1/images-catalog")
    # "" (not None: questionary would return the title instead) means the lab's CPU base.
    choices = [questionary.Choice("CPU only: the lab's base image (python)", value="")]
    default = None
    for e in sorted(data.get("entries", []), key=lambda e: not e.get("runnable")):
        label = f"{e['framework']} {e['framework_version']} ({'cuda ' + e['cuda'] if e.get('cuda') else 'cpu'})"
        value = f"{e['framework']}=={e['framework_version']}"
        if e.get("framework") == "python" and e.get("local"):
            continue  # the base image: the first choice already
        if e.get("runnable"):
            choices.append(questionary.Choice(label, value=value))
        else:
            choices.append(questionary.Choice(label, value=value, disabled=f"needs driver ≥ {e.get('min_driver')}"))
    return choices, default


def ask_init(framework: str | None, preset: str | None, kind: str | None,
             image_questions: bool = True) -> tuple[str | None, str | None, str]:
    """The interactive part of project-init: only what the flags did not say."""
    import questionary

    if framework is None and image_questions:
        choices, default = framework_choices()
        framework = ask(questionary.select("Framework:", choices=choices, default=default)) or None
    if preset is None and image_questions:
        pc = [questionary.Choice("none", value="")] + [questionary.Choice(p, value=p) for p in PRESETS]
        preset = ask(questionary.select("Package preset:", choices=pc)) or None
    if kind is None:
        kind = ask(questionary.select("Project layout:", choices=list(KINDS), default="data-science"))
    return framework, preset, kind


def write_requirements(ws: Path, project: str, src: str | None) -> str:
    """``requirements.txt``: a copy of ``src``, else a commented empty one; an existing file is
    kept. Returns what happened (for the summary)."""
    from ds01.cli.commands.images import copy_requirements

    dst = ws / "requirements.txt"
    if src:
        before = dst.read_bytes() if dst.is_file() else None
        copy_requirements(src, ws, force=False)
        return "kept" if before == dst.read_bytes() else "copied from " + src
    if dst.exists() or dst.is_symlink():
        return "kept"
    from ds01.projects.scaffold import write_file_atomic

    write_file_atomic(dst, REQUIREMENTS_TEMPLATE.format(project=project), replace=False)
    return "created (empty: add your packages)"


def write_dockerfile(ws: Path, project: str, base: dict | None, framework: str | None, packages: list[str],
                     preset: str | None) -> str:
    """The project's Dockerfile via the image generator (image-create --no-build); an existing
    one is the user's and is kept."""
    from ds01.cli.commands.images import render, write_text

    df = ws / "Dockerfile"
    if base is None:
        return "kept (yours; change packages with image-update)"
    write_text(df, render(project, base, framework, packages, [], "requirements.txt", preset))
    return f"written (base {base['image']})"


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--framework", "-f", metavar="F[==VER]", help="pytorch, tensorflow, jax or python (default: CPU base)")
@click.option("--preset", type=click.Choice(PRESETS), help="a package set for a kind of work")
@click.option("--requirements", "-r", metavar="FILE", help="a requirements file, copied to the project")
@click.option("--packages", "-p", multiple=True, metavar="PKG", help="pip packages for the image (repeat, or 'a b,c')")
@click.option("--type", "kind", type=click.Choice(KINDS), help="folder layout (default: data-science)")
@click.option("--no-git", is_flag=True, help="do not make it a git repository")
@click.option("--yes", "-y", is_flag=True, help="never ask: use the flags and the defaults")
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@explain_opt
def project_init(project: str, framework: str | None, preset: str | None, requirements: str | None,
                 packages: tuple[str, ...], kind: str | None, no_git: bool, yes: bool, as_json: bool,
                 explain: bool) -> None:
    """Set up a new project in ~/workspace/PROJECT, ready for project-launch.

    Makes the folders (dir-create), requirements.txt, a Dockerfile for your image
    (image-create --no-build), a README (readme-create) and a git repository with a first
    commit (git-init). Existing files are kept, so running it again is safe.

    \b
    Examples:
      project-init thesis                       asks a few questions on a terminal
      project-init thesis --yes                 CPU base image, data-science layout
      project-init vision --framework pytorch --preset cv --packages timm --yes
    """
    from ds01.cli.commands.images import select_base, split_words
    from ds01.errors import InvalidInput
    from ds01.names import image_name, validate_project
    from ds01.projects import scaffold
    from ds01.projects.readme import write_readme
    from ds01.projects.workspace import current_user, display_path, ensure_workspace, workspace_dir

    if explain:
        show_explain()
    validate_project(project)
    if requirements and not os.access(Path(requirements).expanduser(), os.R_OK):
        raise InvalidInput(f"cannot read the requirements file {requirements}", "give a path to a file you can read")
    ws_path = workspace_dir(project)
    has_df = (ws_path / "Dockerfile").exists() or (ws_path / "Dockerfile").is_symlink()
    if is_tty() and not yes and not as_json:
        # An existing Dockerfile is kept, so there is no framework or preset to ask about.
        framework, preset, kind = ask_init(framework, preset, kind, image_questions=not has_df)
    kind = kind or "data-science"
    pip = split_words(packages)
    base = None if has_df else select_base(framework)  # asks the daemon: before any file changes
    if is_tty() and not yes and not as_json:
        import questionary

        what = f"{display_path(ws_path)}: {kind} layout, image from {base['image'] if base else 'your Dockerfile'}"
        if not ask(questionary.confirm(f"Create {what}?", default=True)):
            raise click.exceptions.Abort()

    ws, created = ensure_workspace(project)
    steps: dict[str, Any] = {"workspace": "created" if created else "kept"}
    rep = scaffold.create_dirs(ws, kind)
    steps["folders"] = f"{len(rep.created)} created, {len(rep.kept)} kept"
    steps["requirements.txt"] = write_requirements(ws, project, requirements)
    steps["Dockerfile"] = write_dockerfile(ws, project, base, framework, pip, preset)
    label = f"{base['framework']} {base['framework_version']}" if base and framework else None
    user = current_user()[0]
    r = write_readme(ws, project, kind, framework=label, image=f"{image_name(user, project)}:latest")
    steps["README.md"] = "written" if r.created else "kept"
    notes: list[str] = []
    if base and base.get("local") and not base.get("present"):
        notes.append(f"the base image {base['image']} is not on this server yet; an admin creates it with "
                     "'ds01 admin base-image bootstrap' (project-launch needs it)")
    if no_git:
        steps["git"] = "skipped (--no-git)"
    else:
        steps["git"], git_notes = _git_step(ws)
        notes += git_notes
    if as_json:
        return print_json({"project": project, "path": str(ws), "type": kind, "steps": steps, "notes": notes,
                           "next": f"project-launch {project}"})
    for k, v in steps.items():
        ok(f"{k}: {v}")
    for n in notes:
        click.echo(click.style("note: ", fg="cyan") + n)
    click.echo(f"\nYour project is in {display_path(ws)} (it is /workspace inside the container).")
    click.echo(f"Next: project-launch {project}")


def _git_step(ws: Path) -> tuple[str, list[str]]:
    from ds01.projects.git import git_init

    g = git_init(ws)
    if not g.created:
        return "kept (already a repository)", g.notes
    return "repository with a first commit" + (f" ({g.commit[:10]})" if g.commit else ""), g.notes


# =========================================================================== project-launch


def image_view(project: str) -> dict | None:
    """The daemon's view of the project image, or None when there is none."""
    from ds01.errors import NotFound

    try:
        return Client().call("GET", f"/v1/images/{q(project)}")
    except NotFound:
        return None


def ensure_image(project: str, ws: Path, rebuild: bool, no_cache: bool, as_json: bool) -> tuple[str, bool]:
    """Build the project image when needed (see ds01.projects.launch); returns (image, rebuilt)."""
    from ds01.cli.commands.images import build
    from ds01.projects.launch import (Stamp, client_hash, decide_build, file_signature, hash_covers_build, load_stamp,
                                      save_stamp)

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
        return img["image"], False
    if not as_json:
        info(f"building the image: {d.reason}")
    res = build(project, no_cache=no_cache, as_json=as_json)
    save_stamp(project, Stamp(current, str(res.get("id")), str(ws), signature, covers))
    if not as_json:
        if res.get("up_to_date"):
            ok(f"image {res['image']} is up to date (nothing changed)")
        else:
            ok(f"built {res['image']} in {res.get('seconds', 0):.1f} s")
    return res["image"], not res.get("up_to_date")


def existing_container(project: str) -> dict | None:
    for r in Client().call("GET", "/v1/containers"):
        if r.get("project") == project:
            return r
    return None


def replace_outdated(project: str, yes: bool, as_json: bool) -> None:
    """After a rebuild, the project's existing container still has the old image: retire it when
    the user agrees (or --yes), else say how."""
    rec = existing_container(project)
    if rec is None:
        return
    state = "running" if rec.get("status") == "running" else "stopped"
    question = f"your {state} container of {project} still has the previous image; replace it (workspace kept)?"
    agree = yes
    if not yes and is_tty() and not as_json:
        import questionary

        agree = ask(questionary.confirm(question, default=True))
    if agree:
        Client().call("POST", f"/v1/containers/{q(project)}/retire", {})
        if not as_json:
            ok(f"retired the old container of {project}")
    elif not as_json:
        click.secho(f"  note: reusing your {state} container with the previous image; to use the new one: "
                    f"container-retire {project} && project-launch {project}", fg="yellow")


@click.command(context_settings=CTX)
@click.argument("project")
@click.option("--rebuild", is_flag=True, help="let the daemon check every file of the image (it builds what changed)")
@click.option("--no-cache", is_flag=True, help="rebuild every step of the image (implies --rebuild)")
@gpu_options
@open_option
@click.option("--jupyter", is_flag=True, help="start JupyterLab in it and print the URL and the ssh -L line")
@click.option("--yes", "-y", is_flag=True, help="never ask (e.g. replace an outdated container)")
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@explain_opt
def project_launch(project: str, rebuild: bool, no_cache: bool, gpus: int | None, gpu_profile: str | None,
                   mig: int | None, queue: bool, open_: bool | None, jupyter: bool, yes: bool, as_json: bool,
                   explain: bool) -> int | None:
    """Build PROJECT's image if needed, start its container and open a shell in it.

    The image is rebuilt only when the Dockerfile or requirements.txt changed since the last
    build (or with --rebuild). A running container of the project is reused.

    \b
    Examples:
      project-launch thesis
      project-launch thesis --gpus 1 --background
      project-launch thesis --jupyter            JupyterLab, reachable through ssh -L
    """
    from ds01.cli.commands.workflows import gpu_request, open_shell
    from ds01.cli.verbs import deploy, launch_unchanged, report_deploy, should_open
    from ds01.errors import NotFound
    from ds01.projects.workspace import display_path, workspace_dir

    if explain:
        show_explain()
    gpu = gpu_request(gpus, gpu_profile, mig)
    ws = workspace_dir(project)
    if not (ws / "Dockerfile").is_file():
        where = display_path(ws / "Dockerfile")
        raise NotFound(f"{where} does not exist, so there is no image to launch",
                       f"set the project up first: project-init {project}")
    ports = [JUPYTER_PORT] if jupyter else None
    out = None
    if not (rebuild or no_cache):
        out = launch_unchanged(project, str(ws), gpu=gpu, queue=queue, ports=ports, as_json=as_json)
    if out is None:
        image, rebuilt = ensure_image(project, ws, rebuild, no_cache, as_json)
        if rebuilt:
            replace_outdated(project, yes, as_json)
        out = deploy(project, image=image, gpu=gpu, queue=queue, ports=ports)
    if not as_json:
        report_deploy(project, out)
    if out.get("queued"):
        return print_json(out) if as_json else None
    if jupyter:
        out["jupyter"] = start_jupyter(project, out, as_json)
    if as_json:
        print_json(out)
    if should_open(open_, as_json or jupyter):
        return open_shell(project)
    if not as_json:
        click.echo(f"  next: container-run {project}   (a shell)   or   container-retire {project}   (when done)")
    return None


# --------------------------------------------------------------------------- JupyterLab

JUPYTER_CHECK = "python3 -c 'import jupyterlab' >/dev/null 2>&1"
# The token comes on stdin, so it is never on a command line (other users can read those).
JUPYTER_START = f"""\
read -r JUPYTER_TOKEN; export JUPYTER_TOKEN
if [ -f /tmp/ds01-jupyter.pid ]; then kill "$(cat /tmp/ds01-jupyter.pid)" 2>/dev/null && sleep 1; fi
nohup python3 -m jupyterlab --ip=0.0.0.0 --port={JUPYTER_PORT} --no-browser \
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


def start_jupyter(project: str, record: dict, as_json: bool) -> dict:
    """Start JupyterLab in the container (background, random token) and print how to reach it."""
    import secrets

    from ds01.client.capture import capture_exec
    from ds01.errors import Conflict, NotFound, RuntimeFailure
    from ds01.projects.launch import host_port
    from ds01.projects.workspace import current_user

    port = host_port(record, JUPYTER_PORT)
    if port is None:
        raise Conflict(f"your running container of {project} was started without a port for JupyterLab",
                       f"replace it: container-retire {project} && project-launch {project} --jupyter")
    if capture_exec(project, ["sh", "-c", JUPYTER_CHECK]).code != 0:
        raise NotFound(f"JupyterLab is not installed in the image of {project}",
                       f"add it: image-update {project} --add jupyterlab   then: project-launch {project} --jupyter")
    token = secrets.token_urlsafe(24)
    capture_exec(project, ["sh", "-c", JUPYTER_START], stdin=(token + "\n").encode())
    res = capture_exec(project, ["python3", "-c", JUPYTER_WAIT], timeout=90)
    if res.code != 0:
        raise RuntimeFailure("JupyterLab did not start in the container; its log ends with:\n" + res.text[-1500:],
                             f"look inside with: container-run {project} -- cat /tmp/ds01-jupyter.log")
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    ssh = f"ssh -N -L {port}:127.0.0.1:{port} {current_user()[0]}@{host_name()}"
    if not as_json:
        ok(f"JupyterLab is running in {project}")
        click.echo(f"  1. on your laptop, forward the port (leave it open):\n       {ssh}")
        click.echo(f"  2. then open:  {url}")
        click.echo("  (the port listens on 127.0.0.1 only; the token is your password: do not share the URL)")
    return {"port": port, "url": url, "ssh": ssh}
