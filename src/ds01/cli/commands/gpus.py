"""GPU commands: the inventory with holders, your limits, the fair queue."""

from __future__ import annotations

import click

from ds01.cli.lazy import Client as _client
from ds01.cli.options import json_opt
from ds01.cli.output import ago, print_json, table
from ds01.client import api


@click.command()
@json_opt
def gpus(as_json: bool) -> None:
    """Every GPU and MIG instance, and who holds it.

    \b
    Example:
      ds01 gpus
      ds01 gpus --json
    """
    from ds01.units import format_size

    inv = api.gpus(_client())
    if as_json:
        return print_json(inv)
    rows = []
    for d in inv["devices"]:
        if not d["allocatable"]:
            kind = f"{d['name']} (MIG-split)"
        else:
            kind = d["profile"] if d["kind"] == "mig" else d["name"]
        h = d["holder"]
        u = d["utilization"]
        rows.append([d["label"], kind, format_size(d["memory_bytes"]), f"{d['equivalents']:.2f}" if d["allocatable"] else "-",
                     f"{h['user']}/{h['project']}" if h else ("free" if d["allocatable"] else "-"),
                     ago(h["since"]) if h else "",
                     "-" if not u or u["gpu_percent"] is None else f"{u['gpu_percent']:.0f}%", d["uuid"]])
    # cluster mode: the gpu column names the node too ("ds01n1/0")
    table(["gpu", "device", "memory", "equiv", "holder", "since", "util", "uuid"], rows, empty="no GPUs on this host")
    for n in inv.get("nodes") or []:  # cluster mode: each node as Slurm and DS01 see it
        click.echo(f"node {n['node']}: {n['state'].lower()}" + (f" ({n['reason']})" if n.get("reason") else "")
                   + f"; agent {n['agent']}")
    click.echo(f"free: {inv['free_equivalents']} of {inv['total_equivalents']} GPU-equivalents; "
               f"queued requests: {inv['queue_length']}; driver {inv['driver_version'] or '-'} ({inv['source']})")


def source_text(src: str | None) -> str:
    """``user`` / ``group:<name>`` / ``defaults`` (policy/limits.py) in words."""
    if src == "user":
        return "user override"
    if src and src.startswith("group:"):
        return f"group {src[6:]}"
    return "default" if src == "defaults" else (src or "")


@click.command()
@click.option("--user", metavar="USER", help="(admins) show USER's limits")
@json_opt
def check_limits(user: str | None, as_json: bool) -> None:
    """Your limits, what you use now, and what is left.

    \b
    Example:
      check-limits
      ds01 quota --json
    """
    from ds01.units import format_duration, format_size

    out = api.limits(_client(), user=user)
    if as_json:
        return print_json(out)
    lim, use, left = out["limits"], out["usage"], out["left"]
    click.echo(f"{out['user']}" + (f" (group {out['group']})" if out["group"] else " (defaults)"))
    keys = ["max_gpus", "max_containers", "max_jobs_queued", "max_jobs_running", "max_gpus_per_container", "allow_full_gpu", "allow_mig", "cpus", "memory",
            "max_runtime", "idle_timeout", "gpu_hold_after_stop", "priority_weight", "max_workspace_bytes"]
    rows = [
        ["GPUs (equivalents)", lim["max_gpus"], use["gpus"], left["gpus"]],
        ["containers", lim["max_containers"], use["containers"], left["containers"]],
        ["batch jobs queued", lim["max_jobs_queued"], use.get("jobs_queued", ""), left.get("jobs_queued", "")],
        ["batch jobs running", lim["max_jobs_running"], use.get("jobs_running", ""), left.get("jobs_running", "")],
        ["GPUs per container", lim["max_gpus_per_container"], "", ""],
        ["whole GPUs allowed", "yes" if lim["allow_full_gpu"] else "no", "", ""],
        ["MIG allowed", "yes" if lim["allow_mig"] else "no", "", ""],
        ["CPUs per container", lim["cpus"], "", ""],
        ["memory per container", format_size(lim["memory"]), "", ""],
        ["max runtime", format_duration(lim["max_runtime"]), "", ""],
        ["idle timeout", format_duration(lim["idle_timeout"]), "", ""],
        ["GPU kept after stop", format_duration(lim["gpu_hold_after_stop"]), "", ""],
        ["priority weight", lim["priority_weight"], "", ""],
        disk_row(lim.get("max_workspace_bytes", 0), out.get("disk")),
    ]
    sources = lim.get("sources") or {}
    if sources:  # where each value comes from: the user's override, their group, the defaults
        rows = [row + [source_text(sources.get(k))] for row, k in zip(rows, keys)]
    table(["limit", "value", "used", "left"] + (["from"] if sources else []), rows)
    for what in out.get("over") or ():  # a limit lowered while held (ds01 admin limits / reload)
        click.echo(f"{what}: over the new limit ({use[what]:g} held, limit {lim['max_' + what]:g}); what you "
                   "hold is kept; new requests are refused until you are under it")
    for line in disk_lines(out.get("disk")):
        click.echo(line)


def disk_row(limit: int, d: dict | None) -> list:
    """check-limits' workspace row: limit (0 = none), bytes used (the last measurement), left."""
    from ds01.units import format_size

    used = left = ""
    if d and d.get("measured"):
        used = ("≥ " if d.get("partial") and not d.get("enforced") else "") + format_size(d["used_bytes"])
        left = format_size(d["left_bytes"]) if d.get("left_bytes") is not None else ""
    return ["workspace bytes", format_size(limit) if limit else "no limit", used, left]


def disk_lines(d: dict | None) -> list[str]:
    """Image bytes, how the workspace limit is enforced here, the measurement's age."""
    from ds01.units import format_duration, format_size

    if not d:
        return []
    if not d.get("measured"):
        return [f"disk: {d.get('note')}"]
    shared = "shared layers counted once" if d.get("shared_layers_counted_once") else "each image's own size"
    out = [f"images: {format_size(d['image_bytes'])} in {d['images']} image(s) ({shared})",
           f"workspace {d['workspace']}: {format_size(d['workspace_bytes'])}"
           + (" (at least: the count stopped at its time budget)" if d.get("partial") else "")
           + f", measured {format_duration(d['age_s'])} ago",
           f"workspace limit: {d['enforcement']}" if d.get("max_workspace_bytes") else
           f"workspace limit: none set ({d['enforcement']})"]
    if d.get("quota_used_bytes") is not None:  # what the quota counts: all the user's files there
        out.append(f"quota count (all your files on that filesystem): {format_size(d['quota_used_bytes'])}")
    if d.get("over"):
        out.append("workspace: over your limit of " + format_size(d["max_workspace_bytes"])
                   + "; delete or move files" + ("" if d.get("enforced") else " (not enforced here, but counted)"))
    return out


@click.command()
@click.option("--cancel", "cancel_id", type=int, metavar="ID", help="cancel your waiting request ID")
@click.option("--all-users", is_flag=True, help="(admins) everyone's requests")
@json_opt
def gpu_queue(cancel_id: int | None, all_users: bool, as_json: bool) -> None:
    """Your requests waiting for a GPU, in fair-share order.

    \b
    Example:
      gpu-queue
      gpu-queue --cancel 12
    """
    from ds01.cli.output import ok
    from ds01.units import format_duration

    c = _client()
    if cancel_id is not None:
        out = api.queue_cancel(c, cancel_id)
        return print_json(out) if as_json else ok(f"cancelled request {cancel_id}")
    rows = api.queue(c, all_users=all_users)
    if as_json:
        return print_json(rows)
    slurm = any("slurm_job" in r for r in rows)  # cluster mode: Slurm's reason and its own estimate
    table(["id", "position", "user", "project", "waiting for", "waited", "estimate"] + (["slurm"] if slurm else []),
          ([r["id"], r["position"], r["user"], r["project"], r["request"], format_duration(r["waiting_s"]),
            "-" if r["estimate_s"] is None else f"≤ {format_duration(r['estimate_s'])}"]
           + ([f"job {r['slurm_job']}: {r.get('reason') or 'pending'}" if "slurm_job" in r else ""] if slurm else [])
           for r in rows),
          empty="no requests waiting")
