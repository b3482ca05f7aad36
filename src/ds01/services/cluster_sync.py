"""``ds01 admin cluster sync`` (issue 18): DS01's policy translated to Slurm, shown as a diff and
applied on request. The mapping itself is pure (``policy/slurm.py``: ``wanted_settings``,
``qos_limits``, ``policy_table``); this module reads Slurm's current values and writes.

* slurm.conf keys (fair share, decay half-life, age) are written to the DS01-managed include file
  named by ``cluster.slurm_include`` (slurm.conf must ``Include`` it) and applied with
  ``scontrol reconfigure``; without that file they are shown, not written.
* Per-user limits become one QOS per user (``ds01-<user>``, via ``sacctmgr``) when slurmdbd is
  Slurm's accounting storage; without slurmdbd Slurm has no such limits, and the head enforces
  them at submit time (it always checks the exact GPU-equivalents itself).
"""

from __future__ import annotations

from typing import Any

from ds01.errors import ConfigError, DS01Error
from ds01.policy import slurm as sp

HEADER = "# Written by 'ds01 admin cluster sync' from DS01's config: do not edit here.\n"


def _users(ctx) -> list[tuple[str, set[str]]]:
    import grp
    import pwd

    names = set(ctx.config.users) | {r.user for r in ctx.store.live_containers()}
    out = []
    for n in sorted(names):
        try:
            pw = pwd.getpwnam(n)
        except KeyError:
            continue
        groups = {g.gr_name for g in grp.getgrall() if n in g.gr_mem}
        try:
            groups.add(grp.getgrgid(pw.pw_gid).gr_name)
        except KeyError:
            pass
        out.append((n, groups))
    return out


def qos_commands(qos: dict[str, dict[str, str]]) -> list[list[str]]:
    """sacctmgr argv (after ``sacctmgr -i -n -P``) making each user's QOS and association."""
    cmds = []
    for user, lim in sorted(qos.items()):
        name = f"ds01-{user}"
        qos_set = [f"{k}={v}" for k, v in lim.items() if k != "Fairshare"]
        cmds.append(["add", "qos", name])
        cmds.append(["modify", "qos", f"name={name}", "set", *qos_set])
        cmds.append(["modify", "user", f"name={user}", "set", f"qos+={name}", f"defaultqos={name}",
                     f"fairshare={lim['Fairshare']}"])
    return cmds


def sync(ctx: Any, placement: Any, apply: bool) -> dict[str, Any]:
    if not getattr(placement, "external", False):
        raise ConfigError("this DS01 is not in cluster mode", "set cluster.engine: slurm (docs/scale-out.md)")
    c = ctx.config.cluster
    slurm = placement.slurm
    current = slurm.show_config()
    wanted = sp.wanted_settings(ctx.config)
    diff = sp.settings_diff(current, wanted)
    dbd = current.get("AccountingStorageType", "").endswith("slurmdbd")
    qos = sp.qos_limits(ctx.config, _users(ctx), mig=bool(c.mig_types))
    applied: list[str] = []
    notes: list[str] = []
    if apply and diff:
        if c.slurm_include:
            _write_include(c.slurm_include, wanted)
            slurm.reconfigure()
            applied.append(f"wrote {len(wanted)} slurm.conf keys to {c.slurm_include}; scontrol reconfigure")
        else:
            notes.append("slurm.conf keys not written: set cluster.slurm_include to a file slurm.conf Includes")
    if dbd:
        cmds = qos_commands(qos)
        if apply:
            for argv in cmds:
                try:
                    slurm.sacctmgr(argv)
                except DS01Error as e:
                    if "Nothing new added" not in e.message and "already exists" not in e.message:
                        raise
            applied.append(f"sacctmgr: {len(qos)} user QOS")
    else:
        notes.append("no slurmdbd: per-user limits are enforced by the head at submit time")
    after = sp.settings_diff(slurm.show_config(), wanted) if applied else diff
    ctx.events.emit("admin.cluster_sync", result="ok", data={"applied": applied, "diff": len(diff)})
    return {"slurm_conf": [{"key": k, "current": cur, "wanted": w, "source": src} for k, cur, w, src in diff],
            "remaining": [{"key": k, "current": cur, "wanted": w} for k, cur, w, _ in after],
            "include": c.slurm_include or None, "accounting": "slurmdbd" if dbd else "none", "qos": qos,
            "mapping": [{"ds01": a, "slurm": b, "note": n} for a, b, n in sp.policy_table(ctx.config)],
            "applied": applied, "notes": notes}


def _write_include(path: str, wanted: list) -> None:
    from ds01.atomic_file import write_atomic

    write_atomic(path, HEADER + "".join(f"{s.key}={s.value}\n" for s in wanted), 0o644)
