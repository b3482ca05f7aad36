"""Live reconfiguration and limits from the CLI (issue 16): ``SIGHUP`` / ``ds01 admin reload`` and
``ds01 admin limits show|set|unset``.

A reload validates the whole file first; an invalid file changes nothing (the error names key and
line). A valid one is swapped into ``ctx.config`` in one assignment, so every service sees either
the old or the new config, never a mix. Settings that cannot change in a running daemon
(:data:`RESTART_KEYS`) keep their running value and are reported as needing a restart. Running
containers, allocations and the queue are never touched: a lowered limit applies to new requests.

Limits are written into the config file itself (comments and order kept, see
``models/config_edit.py``), atomically (temp file + rename, owner and mode kept), then reloaded;
each change is an event naming who changed what from what. The daemon writes the file, so members
of the admin group need no root.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any, Callable

from ds01.errors import ConfigError, InvalidInput
from ds01.models.config import Config, parse_config
from ds01.services.context import Context
from ds01.services.identity import Caller
from ds01.atomic_file import write_atomic

log = logging.getLogger("ds01d")

# dotted key prefix -> why it needs a restart; the running value is kept until then
RESTART_KEYS: dict[str, str] = {
    "daemon.instance": "containers are labelled with the instance; a daemon manages only its own",
    "daemon.max_body": "the HTTP server's body limit is fixed when it starts",
    "containers.name_prefix": "existing containers' names derive from it",
    "gpu": "the GPU inventory source is opened at start",
    "engine": "the connection to the container engine is opened at start",
    # cluster mode (issue 18): the runtime, placement and agents' addresses are chosen at start;
    # the rest of cluster.* (place_timeout, drain_after, gres_type, mig_types, slurm_include,
    # head_uid for new agents) applies at once
    "cluster.engine": "the placement (this server or Slurm) and the runtime are chosen at start",
    "cluster.slurm_conf": "the Slurm clients and the nodes' agents are found at start",
    "cluster.agent_port": "the nodes' agents are found at start",
    "cluster.munge_socket": "the agents' clients are made at start",
    "cluster.agent_timeout": "the agents' clients are made at start",
    "cluster.partition": "jobs already placed live in the partition the daemon started with",
    # the API socket's connection bounds (daemon/connections.py) are set when it opens
    "daemon.max_connections": "the API socket's connection bounds are set when it opens",
    "daemon.max_connections_per_user": "the API socket's connection bounds are set when it opens",
    "daemon.admin_connection_reserve": "the API socket's connection bounds are set when it opens",
    "daemon.connection_idle_timeout": "the API socket's connection bounds are set when it opens",
}

Hook = Callable[[Config, Config], None]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are leaves (compared whole)."""
    if isinstance(data, dict):  # an empty mapping has no leaves (``users: {}`` = no overrides)
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def _leaves(cfg: Config) -> dict[str, Any]:
    return flatten(cfg.model_dump(mode="json", exclude_none=True))


def changed_keys(old: Config, new: Config) -> list[str]:
    a, b = _leaves(old), _leaves(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _restart_key(key: str) -> str | None:
    for p in RESTART_KEYS:
        if key == p or key.startswith(p + "."):
            return p
    return None


def keep_running(old: Config, new: Config) -> Config:
    """``new`` with every restart-only setting at its running (``old``) value."""
    out = new
    for key in RESTART_KEYS:
        out = _with(out, key.split("."), _get(old, key.split(".")))
    return out


def _get(model: Any, parts: list[str]) -> Any:
    for p in parts:
        model = getattr(model, p)
    return model


def _with(model: Any, parts: list[str], value: Any) -> Any:
    """A copy of the (frozen) model with the dotted field replaced."""
    if len(parts) == 1:
        return model.model_copy(update={parts[0]: value})
    return model.model_copy(update={parts[0]: _with(getattr(model, parts[0]), parts[1:], value)})


class ConfigAdmin:
    """Owns the config file for the running daemon: reload, limits edits, the admin's views."""

    def __init__(self, ctx: Context, path: Path | str, file_config: Config | None = None):
        self.ctx = ctx
        self.path = Path(path)
        self.hooks: list[Hook] = []  # called after a swap (old, new); failures are logged only
        # name -> (path, forbidden mode bits): the daemon's own files, for `ds01 admin doctor`
        self.own_files: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()  # one read-modify-write-reload at a time
        # what the file said at the last successful load (restart-only keys may differ from ctx)
        self.file_config = file_config or ctx.config

    # -- reload -----------------------------------------------------------------------------
    def _read(self) -> str:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return ""
        except OSError as e:
            raise ConfigError(f"cannot read {self.path}: {e.strerror}")

    def reload(self, actor: Caller | None = None, via: str = "ds01 admin reload") -> dict[str, Any]:
        with self._lock:
            return self._reload(actor, via)

    def _reload(self, actor: Caller | None, via: str, text: str | None = None) -> dict[str, Any]:
        try:
            new = parse_config(self._read() if text is None else text, str(self.path))
        except ConfigError as e:
            self._event("config.reload", actor, "error", "config_error", {"via": via, "message": e.message})
            raise ConfigError(e.message + "\n  (nothing was changed: the daemon keeps running with the "
                              "configuration it had)", e.hint) from None
        old = self.ctx.config
        effective = keep_running(old, new)
        changed = changed_keys(old, effective)
        restart = [{"key": k, "running": v_old, "file": v_new, "why": RESTART_KEYS[_restart_key(k) or k]}
                   for k, v_old, v_new in self._pending(old, new)]
        self.ctx.config = effective  # the swap: one reference assignment, atomic for every reader
        self.file_config = new
        for hook in self.hooks:
            try:
                hook(old, effective)
            except Exception:
                log.exception("applying the reloaded configuration")
        out = {"config": str(self.path), "changed": changed, "restart_required": restart, "via": via}
        self._event("config.reload", actor, "ok", None,
                    {"via": via, "changed": changed[:50], "restart_required": [r["key"] for r in restart]})
        log.info("configuration reloaded (%s): %d setting(s) changed%s", via, len(changed),
                 "; needs a restart: " + ", ".join(r["key"] for r in restart) if restart else "")
        return out

    def _pending(self, running: Config, file: Config) -> list[tuple[str, Any, Any]]:
        a, b = _leaves(running), _leaves(file)
        return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
                if _restart_key(k) and a.get(k) != b.get(k)]

    # -- limits -----------------------------------------------------------------------------
    def limits_show(self, user: str | None = None, group: str | None = None) -> dict[str, Any]:
        from ds01.policy.limits import effective_limits

        cfg = self.ctx.config
        if group is not None:
            g = next((g for g in cfg.groups if g.name == group), None)
            if g is None:
                from ds01.errors import NotFound

                raise NotFound(f"no limits group named {group!r} in the config",
                               "'ds01 admin limits show' lists the groups")
            eff = {k: (getattr(g.limits, k) if getattr(g.limits, k) is not None else getattr(cfg.defaults, k))
                   for k in g.limits.model_fields}
            return {"scope": "group", "group": group, "unix_group": g.unix_group, "members": list(g.members),
                    "set": g.limits.model_dump(exclude_none=True), "effective": eff}
        if user is not None:
            who = self._account(user)
            eff = effective_limits(cfg, who.name, set(who.groups))
            return {"scope": "user", "user": who.name, "group": eff.group,
                    "set": cfg.users[who.name].model_dump(exclude_none=True) if who.name in cfg.users else {},
                    "effective": {k: v for k, v in eff.to_dict().items() if k not in ("group", "sources")},
                    "sources": eff.sources}
        return {"scope": "defaults", "effective": cfg.defaults.model_dump(),
                "groups": [{"name": g.name, "unix_group": g.unix_group, "members": list(g.members),
                            "set": g.limits.model_dump(exclude_none=True)} for g in cfg.groups],
                "users": {u: lim.model_dump(exclude_none=True) for u, lim in cfg.users.items()}}

    def limits_change(self, actor: Caller, user: str | None, group: str | None, defaults: bool,
                      set_: dict[str, Any], unset: list[str]) -> dict[str, Any]:
        """Set/unset limits at one level, write the file, reload; an event records the change."""
        from ds01.models.config_edit import check_key, edit_limits

        if sum(x is not None and x is not False for x in (user, group, defaults or None)) != 1:
            raise InvalidInput("name exactly one of USER, --group G or --defaults")
        if not set_ and not unset:
            raise InvalidInput("nothing to change", "e.g. 'ds01 admin limits set alice max_gpus=2'")
        for k in (*set_, *unset):
            check_key(k)
        if user is not None:
            user = self._account(user).name
        if defaults and unset:
            raise InvalidInput("defaults cannot be unset (every limit needs a default)",
                               "set a new value instead")
        target = f"user:{user}" if user else (f"group:{group}" if group else "defaults")
        with self._lock:
            text = self._read()
            new_text, changes = edit_limits(text, user, group, set_, unset)
            try:
                parse_config(new_text, str(self.path))  # validated like the file itself
            except ConfigError as e:
                self._event("config.limits", actor, "denied", "config_error",
                            {"target": target, "set": set_, "unset": unset, "message": e.message})
                raise ConfigError(e.message.replace("invalid configuration", "refused: the change would make "
                                                    "the configuration invalid", 1), e.hint) from None
            if changes:
                self._write(new_text)
            self._event("config.limits", actor, "ok", None, {"target": target, "changes": changes,
                                                             "file": str(self.path)}, target=target)
            reload = self._reload(actor, "ds01 admin limits")
        return {"target": target, "changes": changes, "reload": reload, "config": str(self.path)}

    def _account(self, name: str) -> Caller:
        import pwd

        from ds01.errors import NotFound
        from ds01.services.identity import caller_from_uid

        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise NotFound(f"no account named {name!r} on this host",
                           "limits are set per login name ('getent passwd NAME')") from None
        return caller_from_uid(pw.pw_uid, None, self.ctx.config.admin_group)

    def _write(self, text: str) -> None:
        """Replace the file atomically, keeping its owner and mode (root:root 0644 when new)."""
        real = Path(os.path.realpath(self.path))
        real.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = real.stat()
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        except FileNotFoundError:
            mode, uid, gid = 0o644, os.geteuid(), os.getegid()
        write_atomic(str(real), text, mode, (uid, gid))

    # -- views --------------------------------------------------------------------------------
    def users(self, containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every account the lab knows: limit overrides, group members, admins, container owners."""
        from ds01.policy.limits import effective_limits

        cfg = self.ctx.config
        names: set[str] = set(cfg.users)
        for g in cfg.groups:
            names.update(g.members)
            if g.unix_group:
                names.update(_members(g.unix_group))
        names.update(_members(cfg.admin_group))
        names.update(c["user"] for c in containers)
        held: dict[str, float] = {}
        for a in self.ctx.store.open_allocations():
            held[a["user"]] = held.get(a["user"], 0.0) + a["equivalents"]
        rows = []
        for n in sorted(names):
            try:
                who = self._account(n)
            except Exception:
                rows.append({"user": n, "exists": False})
                continue
            eff = effective_limits(cfg, who.name, set(who.groups))
            mine = [c for c in containers if c["user"] == n]
            rows.append({"user": n, "exists": True, "uid": who.uid, "admin": who.is_admin, "group": eff.group,
                         "overrides": sorted(cfg.users[n].model_dump(exclude_none=True)) if n in cfg.users else [],
                         "containers": len(mine), "running": sum(c["status"] == "running" for c in mine),
                         "gpus": round(held.get(n, 0.0), 4), "max_gpus": eff.max_gpus,
                         "max_containers": eff.max_containers})
        return rows

    def _event(self, action: str, actor: Caller | None, result: str, reason: str | None, data: dict,
               target: str | None = None) -> None:
        try:
            self.ctx.events.emit(action, user=actor.name if actor else None, uid=actor.uid if actor else None,
                                 target=target or str(self.path), result=result, reason=reason, data=data)
        except Exception:
            log.exception("could not record the %s event", action)


def _members(group: str) -> list[str]:
    import grp
    import pwd

    try:
        g = grp.getgrnam(group)
    except KeyError:
        return []
    out = list(g.gr_mem)
    out += [p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid]
    return out


# -- the daemon's own files (``ds01 admin doctor``) -------------------------------------------
def own_path_checks(paths: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    """For each ``name -> (path, forbidden mode bits)``: ok when the path is owned by the daemon's
    user and has none of the forbidden bits; otherwise a warning with the fix."""
    euid = os.geteuid()
    out = []
    for name, (path, forbidden) in paths.items():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            out.append({"check": f"daemon:{name}", "status": "ok", "detail": f"{path} does not exist (yet)"})
            continue
        mode = stat.S_IMODE(st.st_mode)
        problems = []
        if st.st_uid != euid:
            problems.append(f"owned by uid {st.st_uid}, not {euid}")
        if stat.S_ISLNK(st.st_mode):
            problems.append("is a symlink")
        if mode & forbidden:
            problems.append(f"mode {mode:04o} allows {_bits(mode & forbidden)}")
        if problems:
            out.append({"check": f"daemon:{name}", "status": "warn", "detail": f"{path}: " + "; ".join(problems),
                        "fix": f"chown {euid} {path} && chmod {mode & ~forbidden:04o} {path}"})
        else:
            out.append({"check": f"daemon:{name}", "status": "ok", "detail": f"{path} ({mode:04o})"})
    return out


def engine_checks(security_options: list[str] | None) -> list[dict[str, Any]]:
    """Host-wide engine settings the isolation relies on. Build steps cannot be given
    no-new-privileges per build (the engine's build API refuses security options), so the
    engine's own default is the only way to have it there."""
    if security_options is None:
        return [{"check": "engine:no-new-privileges", "status": "warn",
                 "detail": "the container engine did not say which security options it enforces",
                 "fix": "check that dockerd is running and answering"}]
    if any(o.split(",")[0] == "name=no-new-privileges" for o in security_options):
        return [{"check": "engine:no-new-privileges", "status": "ok",
                 "detail": "the engine applies no-new-privileges to every container, build steps included"}]
    return [{"check": "engine:no-new-privileges", "status": "warn",
             "detail": "build steps run without no-new-privileges (setuid binaries in a RUN step gain privileges)",
             "fix": 'set "no-new-privileges": true in /etc/docker/daemon.json (or dockerd --no-new-privileges) '
                    "and restart the engine"}]


def _bits(m: int) -> str:
    who = []
    if m & 0o070:
        who.append("its group")
    if m & 0o007:
        who.append("everyone")
    return " and ".join(who) + (" to write" if m & 0o022 and not m & 0o044 else " access")
