"""The fast path: the plain forms of the hottest verbs, run without importing click.

A Python CLI pays for its start-up on every command, and click's import is most of ours (~25 ms
of ~45). The verbs a lab types all day, and scripts call in loops, are one daemon call each, so
their plain forms are recognised here and run straight from :mod:`ds01.cli.verbs`, the same
bodies the click commands call.

The rule that keeps this safe: the fast path only *accepts*. Its grammar per verb is one
positional PROJECT (none for ``container-list``) plus a few boolean flags that the click command
also has (a unit test checks that against the click definitions). Anything else (``--help``, another option, a value, a
second positional, ``--``) returns None and the command goes through click, which owns help,
usage errors and every other option. ``project-launch`` takes the fast path only when nothing
changed since the last build; otherwise it too falls back, having done and printed nothing.
``image-update`` only for ``--rebuild`` (no edits to make: straight to the daemon's build).

``DS01_NO_FAST=1`` turns the fast path off (tests compare both paths with it); so does click's
shell completion (``_<PROG>_COMPLETE``).
"""

from __future__ import annotations

import os
import sys

# verb -> the boolean flags its fast form accepts (all of them exist on the click command)
FLAGS: dict[str, frozenset[str]] = {
    "container-create": frozenset({"--cpu-only", "--json"}),
    "container-start": frozenset({"--json"}),
    "container-stop": frozenset({"--json"}),
    "container-remove": frozenset({"--force", "--json"}),
    "container-list": frozenset({"--all", "--json"}),  # no PROJECT
    "container-deploy": frozenset({"--background", "--json"}),
    "project-launch": frozenset({"--background", "--json"}),
    "image-update": frozenset({"--rebuild", "--json"}),  # only with --rebuild (see _run)
}
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


def _run(name: str, project: str, flags: frozenset[str]) -> bool:
    """Run the verb; False when it turns out to need the full path (nothing was done then)."""
    from ds01.cli import verbs

    as_json = "--json" in flags
    # deploy/launch open a shell unless --background (or --json), by default on a terminal
    opens_shell = verbs.should_open(False if "--background" in flags else None, as_json)
    if name == "container-list":
        verbs.list_containers(show_all="--all" in flags, as_json=as_json)
    elif name == "container-create":
        verbs.create(project, cpu_only="--cpu-only" in flags, as_json=as_json)
    elif name in ("container-start", "container-stop", "container-remove"):
        verbs.verb(name.split("-", 1)[1], project, {"force": True} if "--force" in flags else {}, as_json)
    elif name == "container-deploy":
        if opens_shell:  # that path stays in click
            return False
        verbs.finish_background(project, verbs.deploy(project), as_json)
    elif name == "project-launch":
        if opens_shell:
            return False
        from ds01.projects.workspace import workspace_path

        ws = workspace_path(project)
        if not os.path.isfile(os.path.join(ws, "Dockerfile")):
            return False  # click explains what is missing
        out = verbs.launch_unchanged(project, ws, as_json=as_json)
        if out is None:
            return False
        verbs.finish_background(project, out, as_json)
    elif name == "image-update":
        if "--rebuild" not in flags:
            return False
        from ds01.cli.building import build, report_built
        from ds01.cli.output import echo
        from ds01.projects.workspace import workspace_path

        df = os.path.join(workspace_path(project), "Dockerfile")
        if not (os.path.isfile(df) and os.access(df, os.R_OK)):
            return False  # click explains what is missing
        if not as_json:
            echo("· nothing to change")
        report_built(project, build(project, as_json=as_json), as_json)
    else:
        return False
    return True


def try_run(name: str, args: list[str]) -> int | None:
    """The exit code when the fast path ran the command; None when click must."""
    if os.environ.get("DS01_NO_FAST", "0") not in ("", "0"):
        return None
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # click's shell completion asking
    parsed = parse(name, args)
    if parsed is None:
        return None
    from ds01.errors import DS01Error

    try:
        done = _run(name, *parsed)
    except DS01Error as e:
        from ds01.cli.output import report_error

        report_error(e)
        return e.exit_code
    except KeyboardInterrupt:  # as click: a newline, "aborted", 130
        sys.stderr.write("\naborted\n")
        return 130
    except BrokenPipeError:  # as click: e.g. '| head' closed the pipe; quiet, exit 1
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0 if done else None
