"""Seeing the lab: ``ds01 status``, ``ds01 events``, ``ds01 usage``, ``ds01 admin dashboard``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ds01.cli.lazy import Client as _client
from ds01.cli.options import json_opt
from ds01.cli.output import print_json, table
from ds01.client import api

Section = tuple[str, list[str], list[list[Any]], str]  # title, columns, rows, text when empty


def _dur(s: float | None) -> str:
    from ds01.units import format_duration

    return "-" if s is None else format_duration(max(0.0, s))


def _size(n: int | None) -> str:
    from ds01.units import format_size

    return "-" if n is None else format_size(n)


def _proc_text(p: dict) -> str:
    if p.get("managed"):
        return f"{p['pid']}:{p['user']}/{p['project']}"
    who = p.get("container") or p.get("user") or "?"
    return f"{p['pid']}:UNMANAGED({p['kind']} {who})"


def device_rows(inv: dict, now: float) -> list[list[Any]]:
    rows = []
    for d in inv["devices"]:
        alloc = d.get("allocatable", True)
        kind = (d["profile"] if d["kind"] == "mig" else d["name"]) if alloc else f"{d['name']} (MIG-split)"
        h = d["holder"]
        u = d["utilization"] or {}
        util = "-" if u.get("gpu_percent") is None else f"{u['gpu_percent']:.0f}%"
        mem = f"{_size(u.get('memory_used_bytes'))}/{_size(d['memory_bytes'])}"
        rows.append([d["label"], kind, f"{d['equivalents']:.2f}" if alloc else "-",
                     f"{h['user']}/{h['project']}" if h else ("free" if alloc else "-"),
                     _dur(now - h["since"]) if h else "", util, mem,
                     " ".join(_proc_text(p) for p in d.get("processes") or []) or "-"])
    return rows


def job_rows(st: dict, now: float) -> list[list[Any]]:
    """Running, then queued batch jobs (everyone's; ``for``: run time, or time waited)."""
    jobs = st.get("jobs") or {"running": [], "queued": []}
    return [[f"{j['id']}" + (f"[{j['array_index']}]" if j.get("array_index") is not None else ""), j["user"],
             j["project"], j.get("name") or "", j["state"], ",".join(j["gpus"]) or j["request"],
             _dur(now - (j["started_at"] if j["state"] != "queued" and j["started_at"] else j["submitted_at"]))]
            for j in jobs["running"] + jobs["queued"]]


DEVICE_COLS = ["gpu", "device", "equiv", "holder", "held", "util", "memory", "processes"]


def status_sections(st: dict) -> tuple[list[str], list[Section]]:
    now = st["time"]
    inv = st["gpus"]
    jobs = st.get("jobs") or {"running": [], "queued": []}
    head = [f"free: {st['free_equivalents']:.2f} of {st['total_equivalents']:.2f} GPU-equivalents · "
            f"queued: {len(st['queue'])} · jobs: {len(jobs['running'])} running, {len(jobs['queued'])} queued · driver {inv.get('driver_version') or '-'} ({inv.get('source')})"]
    un = inv.get("unmanaged_processes") or []
    if un:
        head.append(f"warning: {len(un)} GPU process(es) outside DS01: "
                    + ", ".join(f"GPU {p['device']} pid {p['pid']} ({p['kind']})" for p in un))
    me = st["me"]
    lim = me["limits"]
    secs: list[Section] = [
        ("GPUs", DEVICE_COLS, device_rows(inv, now), "no GPUs on this host"),
        ("Queue", ["#", "user", "project", "waiting for", "waited"],
         [[q["position"], q["user"], q["project"], q["request"], _dur(q["waiting_s"])] for q in st["queue"]],
         "nobody is waiting"),
        ("Batch jobs", ["job", "user", "project", "name", "state", "gpus", "for"], job_rows(st, now),
         "none running or queued"),
        (f"Your containers ({me['user']})", ["project", "status", "gpus", "image", "created"],
         [[c["project"], c["status"], ",".join(c["gpus"]) or "-", c["image"], _dur(now - c["created_at"]) + " ago"]
          for c in me["containers"]], "none"),
    ]
    jobs_use = "" if "jobs_queued" not in lim["usage"] else (
        f" · jobs queued {lim['usage']['jobs_queued']}/{lim['limits']['max_jobs_queued']}, running "
        f"{lim['usage']['jobs_running']}/{lim['limits']['max_jobs_running']}")
    head.append(f"your limits: GPUs {lim['usage']['gpus']:g}/{lim['limits']['max_gpus']:g} · containers "
                f"{lim['usage']['containers']}/{lim['limits']['max_containers']}" + jobs_use
                + (f" (group {lim['group']})" if lim.get("group") else ""))
    return head, secs


def history_rows(charts: dict | None, width: int = 48) -> list[list[Any]]:
    """Per device: a sparkline of the sampled utilization and of the time held (each character
    is 24 h / ``width``; blank where nothing was sampled), with the day's means."""
    from ds01.policy.series import sparkline

    rows = []
    for d in (charts or {}).get("devices", []):
        known = [v for v in d["utilization"] if v is not None]
        held = [100.0 * h for h in d["held"]]
        rows.append([d["label"], sparkline(d["utilization"], width) if known else "(no samples yet)",
                     f"{sum(known) / len(known):.0f}%" if known else "-", sparkline(held, width // 2),
                     f"{sum(held) / len(held):.0f}%" if held else "-"])
    return rows


def dashboard_sections(st: dict) -> tuple[list[str], list[Section]]:
    head, secs = status_sections(st)
    secs = [s for s in secs if not s[0].startswith("Your containers")]
    now = st["time"]
    secs += [
        ("Users", ["user", "containers", "running", "gpus", "cpu", "memory", "workspace", "images"],
         [[u["user"], u["containers"], u["running"], f"{u['gpus']:g}", f"{u['cpu_percent']:.0f}%",
           _size(u["memory_bytes"]), _disk(u.get("workspace_bytes"), u.get("workspace_partial")),
           _disk(u.get("image_bytes"))] for u in st["users"]], "no users"),
        ("Near limits", ["user", "project", "gpus", "ran", "runtime left", "why"],
         [[n["user"], n["project"], ",".join(n["gpus"]) or "-", _dur(n["ran_s"]), _dur(n["runtime_left_s"]),
           "; ".join(n["reasons"])] for n in st["near_limits"]], "nothing near a limit"),
        ("GPU history, last 24 h", ["gpu", "utilization", "mean", "held", "held %"],
         history_rows(st.get("charts")), "no history yet"),
        ("Recent lifecycle actions", ["when", "action", "user", "target", "reason"],
         [[_dur(now - e["time"]) + " ago", e["action"], e.get("user") or "", e.get("target") or "",
           e.get("reason") or ""] for e in st["lifecycle"]], "none"),
    ]
    return head, secs


def _disk(n: int | None, partial: bool | None = False) -> str:
    """A disk figure of the dashboard: '-' until measured, '≥' when the walk was cut short."""
    return "-" if n is None else ("≥ " if partial else "") + _size(n)


def _rich(head: list[str], secs: list[Section]):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(h, style="bold" if i == 0 else ("yellow" if h.startswith("warning") else "")) for i, h
                        in enumerate(head)]
    for title, cols, rows, empty in secs:
        t = Table(title=title, title_justify="left", box=None, header_style="bold", title_style="bold cyan")
        for c in cols:
            t.add_column(c.upper())
        for r in rows:
            t.add_row(*("" if c is None else str(c) for c in r))
        parts.append(t if rows else Text(f"{title}: {empty}", style="dim"))
    return Group(*parts)


def _plain(head: list[str], secs: list[Section]) -> None:
    for h in head:
        click.echo(h)
    for title, cols, rows, empty in secs:
        click.echo("")
        click.echo(f"{title}:")
        table(cols, rows, empty=empty)


def _show(fetch, sections, as_json: bool, watch: bool, interval: float) -> None:
    if as_json:
        return print_json(fetch())
    if not watch:
        head, secs = sections(fetch())
        if sys.stdout.isatty():
            from rich.console import Console

            Console().print(_rich(head, secs))
        else:
            _plain(head, secs)
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(_rich(*sections(fetch())), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(_rich(*sections(fetch())))
        except KeyboardInterrupt:
            pass


watch_opts = [
    click.option("--watch", "-w", is_flag=True, help="refresh in place until Ctrl-C"),
    click.option("--interval", type=click.FloatRange(0.5, 3600), default=2.0, show_default=True,
                 help="seconds between refreshes with --watch"),
]


def _watch(f):
    for o in reversed(watch_opts):
        f = o(f)
    return f


@click.command()
@_watch
@json_opt
def status(watch: bool, interval: float, as_json: bool) -> None:
    """What the machine is doing: every GPU / MIG instance with its holder, utilization and
    processes, free capacity, the queue, and your own containers and limits.

    \b
    Example:
      ds01 status
      ds01 status --watch
      ds01 status --json
    """
    c = _client()
    _show(lambda: api.status(c), status_sections, as_json, watch, interval)


@click.command()
@click.option("--no-stats", is_flag=True, help="skip per-container CPU/memory (faster)")
@click.option("--web", is_flag=True, help="serve the dashboard, with charts, as a web page on a local port")
@click.option("--port", type=click.IntRange(0, 65535), default=9103, show_default=True,
              help="with --web: the local port (0: any free one)")
@_watch
@json_opt
def admin_dashboard(no_stats: bool, web: bool, port: int, watch: bool, interval: float, as_json: bool) -> None:
    """(admins) Status for everyone: per-user totals with CPU/memory, containers near their idle
    or runtime limits, a 24 h sparkline per GPU, recent lifecycle actions. With --web, the same
    as a web page with charts (24 h per GPU, the week's GPU-hours per user) until Ctrl-C.

    \b
    Example:
      ds01 admin dashboard
      ds01 admin dashboard --watch --no-stats
      ds01 admin dashboard --web --port 9103
    """
    c = _client()
    if web:
        from ds01.cli.webdash import serve

        api.dashboard(c, stats=False)  # fail here (not an admin, no daemon), not on the first page load
        return serve(lambda: api.dashboard(c, stats=not no_stats), dashboard_sections, port,
                     refresh=max(2, int(interval)) if watch else 10)
    _show(lambda: api.dashboard(c, stats=not no_stats),
          dashboard_sections, as_json, watch, interval)


@click.command()
@click.option("--user", metavar="USER", help="(admins) only USER's events")
@click.option("--since", default="24h", show_default=True, help="how far back: 2h, 7d, or a date 2024-05-01")
@click.option("--type", "types", multiple=True, metavar="TYPE",
              help="action or prefix, e.g. container, gpu.release, lifecycle (repeatable)")
@click.option("--result", "results", multiple=True, type=click.Choice(["ok", "denied", "error", "failed",
                                                                         "rolled_back"]),
              help="only events with this result (repeatable)")
@click.option("--action", "actions", multiple=True, metavar="ACTION",
              help="this action, e.g. config.limits, container.exec (repeatable; like --type)")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@click.option("--all", "all_", is_flag=True, help="also container.exec events (one per shell/command)")
@json_opt
def events(user: str | None, since: str, types: tuple[str, ...], results: tuple[str, ...], actions: tuple[str, ...],
           limit: int, all_: bool, as_json: bool) -> None:
    """What happened: every change, denial and lifecycle action, newest first. You see your own
    events; admins see everyone's.

    \b
    Example:
      ds01 events --since 2h
      ds01 events --type container --type gpu
      ds01 events --user alice --result denied      (admins)
      ds01 events --user alice --action config.limits --all
    """
    import datetime as dt

    rows = api.events(_client(), since=since, user=user, types=(*types, *actions), results=results, limit=limit,
                      all=all_)
    if as_json:
        return print_json(rows)
    table(["time", "action", "user", "target", "result", "reason"],
          ([dt.datetime.fromtimestamp(e["time"]).strftime("%Y-%m-%d %H:%M:%S"), e["action"], e.get("user") or "",
            e.get("target") or "", e["result"], e.get("reason") or ""] for e in rows),
          empty="no events")


@click.command()
@click.option("--since", default="30d", show_default=True, help="window start: 1d, 30d, or a date 2024-05-01")
@click.option("--until", default=None, help="window end (default now)")
@click.option("--by", type=click.Choice(["user", "group", "project", "node"]), default="user", show_default=True)
@click.option("--user", metavar="USER", help="(admins) only USER")
@click.option("--all-users", is_flag=True, help="(admins) everyone's (what admins see by default)")
@click.option("--csv", "as_csv", is_flag=True, help="print CSV (exact numbers, one row per key)")
@json_opt
def usage(since: str, until: str | None, by: str, user: str | None, all_users: bool, as_csv: bool,
          as_json: bool) -> None:
    """GPU-hours (GPU-equivalents × hours), container-hours and peak memory, from the allocation
    records. You see your own; admins see everyone's.

    \b
    Example:
      ds01 usage --since 30d
      ds01 usage --since 2024-05-01 --by group --csv      (admins: everyone)
    """
    if all_users and user:
        raise click.UsageError("--all-users and --user exclude each other")
    out = api.usage(_client(), since=since, until=until, by=by, user=user, all_users=all_users)
    if as_json:
        return print_json(out)
    if as_csv:
        from ds01.policy.usage import to_csv

        click.echo(to_csv(out["rows"], by), nl=False)
        return
    import datetime as dt

    def day(t: float) -> str:
        return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")

    click.echo(f"usage {day(out['since'])} → {day(out['until'])} by {by}")
    table([by, "gpu-hours", "container-hours", "peak memory", "allocations", "containers"],
          ([r[by], f"{r['gpu_hours']:.2f}", f"{r['container_hours']:.2f}", _size(r["peak_memory_bytes"]),
            r["allocations"], r["containers"]] for r in out["rows"]), empty="no usage in this window")
    t = out["totals"]
    click.echo(f"total: {t['gpu_hours']:.2f} GPU-hours, {t['container_hours']:.2f} container-hours")
