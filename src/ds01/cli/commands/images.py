"""L2 image commands. The Dockerfile and requirements are the user's files: the CLI writes them
as the user; the daemon only builds (reading the project as the user, too)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from ds01.cli import options
from ds01.cli.building import Progress, build, report_built, show_failure  # noqa: F401 (re-exported)
from ds01.cli.lazy import Client
from ds01.cli.options import PRESET_NAMES, json_opt
from ds01.cli.output import ago, ok, print_json, table
from ds01.client import api

user_opt = options.user_opt("image")


def split_words(values: tuple[str, ...]) -> list[str]:
    """``--packages "numpy pandas" --packages scipy,six`` → ``[numpy, pandas, scipy, six]``."""
    return [w for v in values for w in re.split(r"[\s,]+", v) if w]


# --------------------------------------------------------------------------- files (as the user)


def write_text(path: Path, text: str) -> None:
    """Atomic write in the same folder; never through a symlink."""
    if path.is_symlink():
        from ds01.errors import Conflict

        raise Conflict(f"{path} is a symlink; DS01 does not write through symlinks", "replace it with a real file")
    tmp = path.with_name(f".{path.name}.ds01-tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def copy_requirements(src: str, ws: Path, force: bool) -> str:
    """Copy the user's requirements file to ``<ws>/requirements.txt`` (returned relative)."""
    from ds01.errors import Conflict, InvalidInput

    dst = ws / "requirements.txt"
    src_p = Path(src).expanduser()
    try:
        data = src_p.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {src}: {e.strerror}") from None
    if dst.exists() and not dst.is_symlink() and src_p.resolve() == dst.resolve():
        return dst.name
    if dst.exists() and dst.read_bytes() != data and not force:
        raise Conflict(f"{dst} already exists with other content",
                       "use --force to replace it, or edit it yourself and omit --requirements")
    if dst.is_symlink():
        raise Conflict(f"{dst} is a symlink; DS01 does not write through symlinks", "replace it with a real file")
    dst.write_bytes(data)
    return dst.name


def select_base(framework: str | None) -> dict:
    return api.images_select(Client(), framework=framework)


def render(project: str, base: dict, framework: str | None, pip: list[str], apt: list[str],
           req: str | None, preset: str | None, inputs: list[str] | tuple[str, ...] = ()) -> str:
    """The Dockerfile for ``base`` (the daemon's select_base answer: the image, what goes on top
    of it, the admin's tools); ``inputs``: the project files ``req`` names."""
    from ds01.images.dockerfile import DockerfileSpec

    label = f"{base['framework']} {base['framework_version']}" if framework or base.get("pip") else None
    return DockerfileSpec.from_request(base_image=base["image"], apt_packages=tuple(apt), pip_packages=tuple(pip),
                                       requirements_file=req, preset=preset, project=project,
                                       framework=label, requirements_inputs=tuple(inputs),
                                       framework_pip=tuple(base.get("pip") or ()),
                                       framework_index=base.get("pip_index"),
                                       tools=tuple(base.get("tools") or ())).render()


def requirement_inputs(ws: Path, req: str | None) -> list[str]:
    """The project files ``req`` names (InvalidInput, exit 3, for a missing one)."""
    if not req:
        return []
    from ds01.projects.requirements import inputs

    return inputs(ws, req)


def note_cpu_only(base: dict) -> None:
    if base.get("fit") == "cpu-only-here":
        click.secho(f"  note: {base['image']} is a CUDA image and this host has no NVIDIA driver: "
                    "it runs here on the CPU only", fg="yellow")


# --------------------------------------------------------------------------- commands


@click.command()
@click.argument("project")
@click.option("--framework", "-f", metavar="F[==VER]",
              help="pytorch, tensorflow, jax or python, optionally ==VERSION (default: the lab's CPU base)")
@click.option("--packages", "-p", multiple=True, metavar="PKG", help="pip packages (repeat, or 'a b,c')")
@click.option("--requirements", "-r", metavar="FILE", help="a requirements file, copied to the project")
@click.option("--apt", multiple=True, metavar="PKG", help="Debian/Ubuntu packages (repeat, or 'a b,c')")
@click.option("--preset", type=click.Choice(PRESET_NAMES), help="a package set for a kind of work")
@click.option("--no-build", is_flag=True, help="only write the Dockerfile")
@click.option("--no-cache", is_flag=True, help="rebuild every step")
@click.option("--force", is_flag=True, help="overwrite an existing Dockerfile / requirements.txt")
@json_opt
def create(project: str, framework: str | None, packages: tuple[str, ...], requirements: str | None,
           apt: tuple[str, ...], preset: str | None, no_build: bool, no_cache: bool, force: bool,
           as_json: bool) -> None:
    """Write ~/workspace/PROJECT/Dockerfile and build it as your image ds01/<you>/PROJECT.

    An existing Dockerfile is yours: without --force it is never overwritten (with no options,
    image-create builds it as it is). A requirements.txt in the project is installed too.

    \b
    The daemon reads the project with your permissions. Not sent to the build: .git, caches,
    data/, datasets/, models/, checkpoints/, outputs/, logs/, wandb/, mlruns/, .venv/ (the
    workspace is mounted at /workspace when the container runs) and what .dockerignore lists.
    Symlinks leading out of the project are refused.

    \b
    What a Dockerfile may do (the daemon checks it, then builds exactly what it
    checked, one instruction per line): FROM/COPY --from only images allowed by
    the admin and, of DS01's images, only your own ds01/<you>/... and the lab's
    ds01/<name>; no image ids, no variables in image names. Refused: ONBUILD
    (and base images with ONBUILD triggers), LABEL ds01.* (DS01's own labels),
    ADD from a URL (use RUN curl/pip in the build), heredocs (<<EOF), RUN flags.
    Build args the admin configures (proxy, pip index, CA bundle) are visible to
    every build (RUN echo $HTTP_PROXY): they never carry credentials.

    \b
    Examples:
      image-create demo --requirements req.txt
      image-create vision --framework pytorch==2.5 --preset cv --packages timm
    """
    from ds01.cli import workspaces
    from ds01.errors import Conflict
    from ds01.projects.workspace import display_path

    ws, _ = workspaces.ensure(project)
    req = copy_requirements(requirements, ws, force) if requirements else None
    if req is None and (ws / "requirements.txt").is_file():
        req = "requirements.txt"
    pip, apt_l = split_words(packages), split_words(apt)
    asked = bool(framework or pip or apt_l or preset or requirements)
    df = ws / "Dockerfile"
    exists = df.exists() or df.is_symlink()
    if exists and not force and not asked:
        if not as_json:
            click.echo(f"· building your existing {display_path(df)}")
        if req:
            from ds01.projects.requirements import sync_dockerfile

            sync_dockerfile(ws, req)  # the existing Dockerfile copies what requirements.txt names now
    else:
        base = select_base(framework)
        text = render(project, base, framework, pip, apt_l, req, preset, requirement_inputs(ws, req))
        if exists and not force and df.read_text(errors="replace") != text:
            raise Conflict(f"{display_path(df)} already exists and differs from what these options would write",
                           f"change packages with 'image-update {project} --add PKG', or use --force to overwrite it")
        write_text(df, text)
        if not as_json:
            ok(f"wrote {display_path(df)} (base {base['image']})" + (f", installs {req}" if req else ""))
            note_cpu_only(base)
            if not base.get("present") and base.get("local"):
                click.secho(f"  note: the base image {base['image']} is not on this host yet; an admin creates "
                            "it with 'ds01 admin base-image bootstrap'", fg="yellow")
    if no_build:
        if as_json:
            print_json({"dockerfile": str(df), "built": False})
        else:
            click.echo(f"  next: image-update {project} --rebuild")
        return
    report_built(project, build(project, no_cache=no_cache, as_json=as_json), as_json)


def _reconstructed_without_req(text: str, project: str) -> str | None:
    """If ``text`` is exactly what image-create wrote without a requirements file, the same file
    with ``requirements.txt`` added; else None (the user changed it: we do not touch it)."""
    from ds01.images.dockerfile import DockerfileSpec, parse_managed_block

    from ds01.images.dockerfile import END_MARKER

    caches = "\n\n# Caches live in the workspace so downloads (models, datasets) survive the container.\n"
    if ("\n# Tools people expect" in text or "\n# The framework" in text) and text.count(END_MARKER) == 1 \
            and text.count(caches) == 1 and text.index(END_MARKER) < text.index(caches) \
            and text.startswith(f"# Dockerfile for the DS01 project {project!r}, written by `ds01 image-create`."):
        # a newer generated file (tools, framework wheels): add the section where render puts it
        from ds01.images.dockerfile import _old_requirements

        sect = ("\n\n# Your requirements file (requirements.txt), copied and installed as it is.\n"
                + _old_requirements("requirements.txt"))
        i = text.index(caches)
        return text[:i] + sect + text[i:]
    m = re.search(r"^FROM (\S+)\s*$", text, re.M)
    lab = re.search(r'^LABEL ds01\.project="[^"]*"(?: ds01\.framework="([^"]*)")?\s*$', text, re.M)
    pre = re.search(r"^# Preset '([a-z]+)'", text, re.M)
    if not m:
        return None
    try:
        apt, pip = parse_managed_block(text)
        kw = dict(base_image=m.group(1), apt_packages=tuple(apt), pip_packages=tuple(pip), project=project,
                  framework=lab.group(1) if lab and lab.group(1) else None, preset=pre.group(1) if pre else None)
        if DockerfileSpec(**kw).render() != text:
            return None
        return DockerfileSpec(**kw, requirements_file="requirements.txt").render()
    except Exception:
        return None


@click.command()
@click.argument("project")
@click.option("--add", "add", multiple=True, metavar="PKG", help="pip packages to add (or re-pin)")
@click.option("--add-apt", multiple=True, metavar="PKG", help="apt packages to add")
@click.option("--remove", "remove", multiple=True, metavar="PKG", help="pip packages to drop")
@click.option("--remove-apt", multiple=True, metavar="PKG", help="apt packages to drop")
@click.option("--requirements", "-r", metavar="FILE", help="replace the project's requirements.txt with FILE")
@click.option("--rebuild", is_flag=True, help="build even when nothing was changed")
@click.option("--no-build", is_flag=True, help="only edit the files")
@click.option("--no-cache", is_flag=True, help="rebuild every step (implies --rebuild)")
@json_opt
def update(project: str, add: tuple[str, ...], add_apt: tuple[str, ...], remove: tuple[str, ...],
           remove_apt: tuple[str, ...], requirements: str | None, rebuild: bool, no_build: bool, no_cache: bool,
           as_json: bool) -> None:
    """Change PROJECT's packages and rebuild its image.

    Only the block between the '# >>> ds01 managed: packages' markers of the Dockerfile is
    rewritten; the rest of the file is left exactly as you wrote it. After a change the image is
    rebuilt (skip with --no-build); --rebuild builds without changes.

    \b
    Examples:
      image-update demo --add pandas --add-apt libgl1
      image-update demo --requirements requirements-new.txt
      image-update demo --rebuild --no-cache
    """
    from ds01.cli import workspaces
    from ds01.errors import NotFound
    from ds01.projects.workspace import display_path

    ws = workspaces.directory(project)
    df = ws / "Dockerfile"
    if not df.is_file():
        raise NotFound(f"{display_path(df)} does not exist", f"write one with 'image-create {project}'")
    text = old = df.read_text()
    pip, apt_l, rm_pip, rm_apt = (split_words(x) for x in (add, add_apt, remove, remove_apt))
    from ds01.images.requirements import is_local_requirement

    local = [p for p in pip if is_local_requirement(p)]  # ./wheels/x.whl, ./pkg: requirements.txt's
    pip = [p for p in pip if p not in local]
    changed_req = _add_local(ws, local, as_json) if local else False
    if local and not re.search(r"^COPY\s+requirements\.txt\b", text, re.M):
        text = _reconstructed_without_req(text, project) or text
    if pip or apt_l or rm_pip or rm_apt:
        from ds01.images.dockerfile import update_managed_block  # pydantic: only when editing

        text = update_managed_block(text, pip, apt_l, rm_pip, rm_apt)
    if requirements:
        before = (ws / "requirements.txt").read_bytes() if (ws / "requirements.txt").is_file() else None
        copy_requirements(requirements, ws, force=True)
        changed_req = changed_req or before != (ws / "requirements.txt").read_bytes()
        if not re.search(r"^COPY\s+requirements\.txt\b", text, re.M):
            new = _reconstructed_without_req(text, project)
            if new is None:
                click.secho("  note: your Dockerfile does not install requirements.txt; add these lines:\n"
                            "    COPY requirements.txt /opt/ds01/requirements.txt\n"
                            "    RUN python3 -m pip install --no-cache-dir -r /opt/ds01/requirements.txt",
                            fg="yellow", err=True)
            else:
                text = new
    if local and not re.search(r"^COPY\s+requirements\.txt\b", text, re.M):
        click.secho("  note: your Dockerfile does not install requirements.txt; add these lines:\n"
                    "    COPY requirements.txt /opt/ds01/requirements.txt\n"
                    "    RUN python3 -m pip install --no-cache-dir -r /opt/ds01/requirements.txt",
                    fg="yellow", err=True)
    if (ws / "requirements.txt").is_file():
        from ds01.images.dockerfile import sync_requirements
        from ds01.projects.requirements import inputs

        text = sync_requirements(text, "requirements.txt", inputs(ws)) or text  # exit 3 if a file is missing
    if text != old:
        write_text(df, text)
    changed = text != old or changed_req
    if not as_json:
        ok(f"updated {display_path(df)}") if changed else click.echo("· nothing to change")
    if no_build or not (changed or rebuild or no_cache):
        if as_json:
            print_json({"dockerfile": str(df), "changed": changed, "built": False})
        elif not no_build:
            click.echo(f"  (image-update {project} --rebuild builds anyway)")
        return
    report_built(project, build(project, no_cache=no_cache, as_json=as_json), as_json)


def _add_local(ws: Path, paths: list[str], as_json: bool) -> bool:
    """``--add ./wheels/x.whl``: the line goes into requirements.txt (the build copies what it
    names); True when the file changed."""
    from ds01.errors import InvalidInput
    from ds01.projects.scaffold import write_file_atomic

    req = ws / "requirements.txt"
    if req.is_symlink():
        raise InvalidInput(f"{req} is a symlink; DS01 does not write through symlinks", "replace it with a real file")
    text = req.read_text(errors="replace") if req.is_file() else ""
    have = {line.strip() for line in text.splitlines()}
    new = [p if p.startswith((".", "/")) else "./" + p for p in paths]
    for p in new:
        from ds01.images.dockerfile import validate_input

        validate_input(p)
        if not (ws / p).exists():
            raise InvalidInput(f"{p} does not exist in the project", f"put it there first (e.g. {ws / p})")
    new = [p for p in new if p not in have]
    if not new:
        return False
    text = text + ("" if not text or text.endswith("\n") else "\n") + "\n".join(new) + "\n"
    write_file_atomic(req, text, replace=True)
    if not as_json:
        ok(f"added {', '.join(new)} to requirements.txt")
    return True


@click.command(name="image-list")
@click.option("--all-users", is_flag=True, help="(admins) every user's images")
@click.option("--catalog", is_flag=True, help="the lab's pre-built framework images instead")
@click.option("--framework", metavar="F", help="with --catalog: only this framework")
@user_opt
@json_opt
def list_(all_users: bool, catalog: bool, framework: str | None, user: str | None, as_json: bool) -> None:
    """List your project images (or, with --catalog, the images you can start from).

    \b
    Examples:
      image-list
      image-list --catalog --framework pytorch
    """
    if catalog:
        return _catalog(framework, as_json)
    from ds01.units import format_size

    rows = api.images(Client(), all_users=all_users, user=user)
    if as_json:
        return print_json(rows)
    cols = ["project", "image", "size", "created", "base", "used by"]
    every = bool(all_users or user)
    if every:
        cols.insert(0, "user")
    table(cols, ([r["user"]] * every + [r["project"], r["image"], format_size(r["size"]), ago(r["created"]),
                                        r.get("base") or "-", ",".join(r["used_by"]) or "-"] for r in rows),
          empty="no images yet ('image-create <project>' makes one)")
    if rows and not every:
        line = own_bytes_line(api.limits(Client()).get("disk"))
        if line:
            click.echo(line)


def own_bytes_line(disk: dict | None) -> str | None:
    """What the caller's images take on the disk, shared layers counted once (the daemon's last
    measurement, the same figure check-limits and max_image_bytes use); None before the first."""
    from ds01.units import format_size

    if not disk or not disk.get("measured") or disk.get("image_bytes") is None:
        return None
    how = "shared layers counted once" if disk.get("shared_layers_counted_once") else "each image's own size"
    return f"your images take {format_size(disk['image_bytes'])} in all ({how})"


def _catalog(framework: str | None, as_json: bool) -> None:
    data = api.images_catalog(Client(), framework=framework)
    if as_json:
        return print_json(data)
    drv = data.get("driver_version")
    click.echo(f"NVIDIA driver on this host: {drv or 'none (CPU only)'}")
    rows = data["entries"]
    table(["framework", "version", "cuda", "python", "image", "runs here", ""],
          ([r["framework"], r["framework_version"], r.get("cuda") or "cpu", r["python"] or "unknown",
            r["image"] + "".join(f" +{p}" for p in r.get("pip") or ()),
            ("CPU only here" if r.get("fit") == "cpu-only-here" else "yes") if r["runnable"]
            else f"no (driver ≥ {r['min_driver']})",
            "default" if r["is_default"] else ""] for r in rows),
          empty="no catalog entries")
    n_ok = sum(r["runnable"] for r in rows)
    click.echo(f"{len(rows)} images, {n_ok} run on this host. "
               "Use one: image-create <project> --framework pytorch==2.5")


@click.command()
@click.argument("project")
@click.option("--force", is_flag=True, help="also remove the container using it (asks first)")
@click.option("--yes", "-y", is_flag=True, help="do not ask")
@user_opt
@json_opt
def delete(project: str, force: bool, yes: bool, user: str | None, as_json: bool) -> None:
    """Delete your image of PROJECT (the Dockerfile and workspace stay).

    Refused while a container uses the image; --force removes that container first (after
    asking; --yes skips the question).

    \b
    Examples:
      image-delete demo
      image-delete demo --force --yes
    """
    c = Client()
    if force:
        info = api.image(c, project, user=user)
        if info["used_by"] and not yes:
            click.confirm(f"the container of {', '.join(info['used_by'])} uses this image; remove it "
                          "(your workspace is kept)?", abort=True)
    out = api.image_delete(c, project, force=force, user=user)
    if as_json:
        return print_json(out)
    for p in out.get("containers_removed") or []:
        ok(f"removed the container of {p}")
    ok(f"deleted image {out['image']}")
