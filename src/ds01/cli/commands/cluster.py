"""``ds01 admin cluster …`` (issue 18): the nodes of a Slurm cluster, and DS01's policy
translated to Slurm settings (``sync``; docs/scale-out.md)."""

from __future__ import annotations

import click

from ds01.cli.lazy import Client as _client
from ds01.cli.options import json_opt
from ds01.cli.output import ok, print_json, table
from ds01.client import api


@click.group()
def cluster() -> None:
    """Cluster mode (cluster.engine: slurm): nodes and the Slurm settings DS01's policy maps to.

    \b
    Example:
      ds01 admin cluster nodes
      ds01 admin cluster sync              show the diff
      ds01 admin cluster sync --apply      write it (include file + reconfigure; QOS with slurmdbd)
    """


@cluster.command()
@json_opt
def nodes(as_json: bool) -> None:
    """Every node: Slurm's state and reason, its GPUs, whether its DS01 agent answers."""
    inv = api.gpus(_client())
    rows = inv.get("nodes") or []
    if as_json:
        return print_json(rows)
    table(["node", "state", "gpus", "agent", "reason"],
          ([n["node"], n["state"].lower(), " ".join(f"{t or 'gpu'}:{c}" for t, c in n["gres"].items()) or "-",
            n["agent"], n.get("reason") or ""] for n in rows), empty="not in cluster mode (no nodes)")


@cluster.command()
@click.option("--apply", is_flag=True, help="write the settings (else only show the diff)")
@json_opt
def sync(apply: bool, as_json: bool) -> None:
    """DS01's queue and limits as Slurm settings: the diff against Slurm, applied with --apply."""
    out = api.admin_cluster_sync(_client(), apply=apply)
    if as_json:
        return print_json(out)
    table(["slurm.conf key", "now", "DS01 wants", "from"],
          ([d["key"], d["current"] or "-", d["wanted"], d["source"]] for d in out["slurm_conf"]),
          empty="slurm.conf: in sync with DS01's queue settings")
    click.echo("")
    table(["user", "QOS limits"], ([u, " ".join(f"{k}={v}" for k, v in q.items())] for u, q in out["qos"].items()),
          empty="no users to map")
    click.echo(f"accounting: {out['accounting']}" + (f"; include file: {out['include']}" if out["include"] else ""))
    for n in out["notes"]:
        click.echo(f"note: {n}")
    for a in out["applied"]:
        ok(a)
    if out["remaining"] and apply:
        click.echo("still different: " + ", ".join(r["key"] for r in out["remaining"]))
