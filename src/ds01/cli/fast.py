"""The fast path: the plain forms of the hottest verbs, run without importing click.

A Python CLI pays for its start-up on every command, and click's import is most of ours (~25 ms
of ~45). The verbs a lab types all day, and scripts call in loops, are one daemon call each, so
their plain forms are recognised here and run straight from :mod:`ds01.cli.verbs`, the same
bodies the click commands call. One table, ``VERBS``: verb → (body, the flags it accepts); errors
end the same way as through click (:func:`ds01.cli.output.guarded`).

The rule that keeps this safe: the fast path only *accepts*. Its grammar per verb is one
positional PROJECT (none for ``container-list``) plus a few boolean flags that the click command
also has (a unit test checks that against the click definitions). Anything else (``--help``, another option, a value, a
second positional, ``--``) returns None and the command goes through click, which owns help,
usage errors and every other option. ``project-launch`` takes the fast path only when nothing
changed since the last build; otherwise it too falls back, having done and printed nothing.
``image-update`` only for ``--rebuild`` (no edits to make: straight to the daemon's build).
``container-run PROJECT -- CMD...`` is the one form with a command after ``--`` (:func:`parse_run`).

``DS01_NO_FAST=1`` turns the fast path off (tests compare both paths with it); so does click's
shell completion (``_<PROG>_COMPLETE``).
"""

from __future__ import annotations

import os

# Each body gets (project, flags) and returns 0 when it ran the command, None when it turns out to
# need click after all (then it has done and printed nothing).


def _list(project: str, flags: frozenset[str]) -> int | None:
    from ds01.cli import verbs

    verbs.list_containers(show_all="--all" in flags, as_json="--json" in flags)
    return 0


def _create(project: str, flags: frozenset[str]) -> int | None:
    from ds01.cli import verbs

    verbs.create(project, cpu_only="--cpu-only" in flags, as_json="--json" in flags)
    return 0


def _verb(name: str):
    def body(project: str, flags: frozenset[str]) -> int | None:
        from ds01.cli import verbs

        if name == "stop":  # --yes/--force: kill running work without asking
            verbs.verb(name, project, "--json" in flags, yes=bool(flags & {"--yes", "--force"}))
        else:
            verbs.verb(name, project, "--json" in flags, **({"force": True} if "--force" in flags else {}))
        return 0

    return body


def _opens_shell(flags: frozenset[str]) -> bool:
    """deploy/launch open a shell unless --background (or --json), by default on a terminal:
    that path stays in click."""
    from ds01.cli import verbs

    return verbs.should_open(False if "--background" in flags else None, "--json" in flags)


def _deploy(project: str, flags: frozenset[str]) -> int | None:
    from ds01.cli import verbs

    if _opens_shell(flags):
        return None
    verbs.finish_background(project, verbs.deploy(project), "--json" in flags)
    return 0


def _launch(project: str, flags: frozenset[str]) -> int | None:
    from ds01.cli import verbs, workspaces

    if _opens_shell(flags):
        return None
    ws = workspaces.path(project)
    if not os.path.isfile(os.path.join(ws, "Dockerfile")):
        return None  # click explains what is missing
    out = verbs.launch_unchanged(project, ws, as_json="--json" in flags)
    if out is None:
        return None
    verbs.finish_background(project, out, "--json" in flags)
    return 0


def _rebuild(project: str, flags: frozenset[str]) -> int | None:
    if "--rebuild" not in flags:
        return None
    from ds01.cli import workspaces
    from ds01.cli.building import build, report_built
    from ds01.cli.output import echo

    as_json = "--json" in flags
    df = os.path.join(workspaces.path(project), "Dockerfile")
    if not (os.path.isfile(df) and os.access(df, os.R_OK)):
        return None  # click explains what is missing
    if not as_json:
        echo("· nothing to change")
    report_built(project, build(project, as_json=as_json), as_json)
    return 0


def _ssh(project: str, flags: frozenset[str]) -> int | None:
    from ds01.cli.sshing import container_ssh

    return container_ssh(project, start="--no-start" not in flags)


# verb -> (its body, the boolean flags its fast form accepts: all exist on the click command)
VERBS: dict[str, tuple[object, frozenset[str]]] = {
    "container-create": (_create, frozenset({"--cpu-only", "--json"})),
    "container-start": (_verb("start"), frozenset({"--json"})),
    "container-stop": (_verb("stop"), frozenset({"--yes", "--force", "--json"})),
    "container-remove": (_verb("remove"), frozenset({"--force", "--json"})),
    "container-list": (_list, frozenset({"--all", "--json"})),  # no PROJECT
    "container-deploy": (_deploy, frozenset({"--background", "--json"})),
    "project-launch": (_launch, frozenset({"--background", "--json"})),
    "image-update": (_rebuild, frozenset({"--rebuild", "--json"})),  # only with --rebuild
    "container-ssh": (_ssh, frozenset({"--no-start"})),  # every SSH connection: no click
}
FLAGS: dict[str, frozenset[str]] = {verb: flags for verb, (_, flags) in VERBS.items()}
NO_PROJECT = frozenset({"container-list"})


def parse(name: str, args: list[str]) -> tuple[str, frozenset[str]] | None:
    """(project, flags) when ``args`` is a plain form of ``name``; else None (use click)."""
    allowed = FLAGS.get(name)
    if allowed is None:
        return None
    project = None
    flags = set()
    for a in args:
        if a in allowed:
            flags.add(a)
        elif a.startswith("-") or project is not None or name in NO_PROJECT:
            return None
        else:
            project = a
    if not project and name not in NO_PROJECT:
        return None
    return project or "", frozenset(flags)


def parse_run(name: str, args: list[str]) -> tuple[str, list[str]] | None:
    """(project, cmd) for ``container-run PROJECT -- CMD...`` (CMD not empty); else None. What
    click makes of that form too: ``--`` ends its options, the rest is the command as it is."""
    if name != "container-run" or len(args) < 3 or args[1] != "--" or args[0].startswith("-"):
        return None
    return args[0], args[2:]


def _run(project: str, cmd: list[str]) -> int:
    from ds01.client.stream import run_exec

    return run_exec(project, cmd, start=True)


def try_run(name: str, args: list[str]) -> int | None:
    """The exit code when the fast path ran the command; None when click must."""
    if os.environ.get("DS01_NO_FAST", "0") not in ("", "0"):
        return None
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # click's shell completion asking
    run = parse_run(name, args)
    if run is not None:  # container-run P -- CMD: scripts call it in loops
        from ds01.cli.output import guarded

        return guarded(lambda: _run(*run))
    parsed = parse(name, args)
    if parsed is None:
        return None
    from ds01.cli.output import guarded

    body = VERBS[name][0]
    return guarded(lambda: body(*parsed))  # type: ignore[operator]
