"""``ds01 admin doctor``: the host settings DS01's isolation relies on but cannot set itself.

Each check returns ``{check, status: ok|warn, detail, fix?}``. They run in the CLI with the
admin's own permissions (everything read is world-readable on a normal host: ``/proc/mounts``,
``/etc/group``, home directories' modes, the NVIDIA runtime's config); the daemon adds the modes
of its own directories and files (``GET /v1/admin/doctor``). Paths are parameters so a test can
hand in a deliberately weak setting.
"""

from __future__ import annotations

import os
import stat
from typing import Any

Check = dict[str, Any]
NVIDIA_CONFIG = "/etc/nvidia-container-runtime/config.toml"
VOLUME_KEY = "accept-nvidia-visible-devices-as-volume-mounts"
HIDING = {"2", "invisible", "4", "ptraceable"}  # hidepid values that hide other users' processes


def ok(check: str, detail: str) -> Check:
    return {"check": check, "status": "ok", "detail": detail}


def warn(check: str, detail: str, fix: str) -> Check:
    return {"check": check, "status": "warn", "detail": detail, "fix": fix}


def proc_hidepid(mounts: str = "/proc/mounts") -> Check:
    """Without hidepid=2 every user's ``ps`` shows the command lines of processes in other users'
    containers (they are host processes)."""
    try:
        with open(mounts) as f:
            lines = f.read().splitlines()
    except OSError as e:
        return warn("proc-hidepid", f"cannot read {mounts}: {e.strerror}", "run the doctor on the host itself")
    fix = ("mount -o remount,hidepid=2 /proc, and in /etc/fstab: 'proc /proc proc defaults,hidepid=2 0 0' "
           "(ds01d runs as root and still sees every process)")
    for line in lines:
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "/proc" and parts[2] == "proc":
            opts = dict((o.split("=", 1) + [""])[:2] for o in parts[3].split(","))
            if opts.get("hidepid") in HIDING:
                return ok("proc-hidepid", f"/proc is mounted with hidepid={opts['hidepid']}")
            return warn("proc-hidepid", f"/proc is mounted without hidepid=2 ({parts[3]}): users see other "
                        "users' processes and their command lines", fix)
    return warn("proc-hidepid", f"no proc mount on /proc in {mounts}", fix)


def _login_homes() -> list[tuple[str, str]]:
    import pwd

    uid_min = 1000
    try:
        with open("/etc/login.defs") as f:
            for line in f:
                p = line.split()
                if len(p) == 2 and p[0] == "UID_MIN" and p[1].isdigit():
                    uid_min = int(p[1])
    except OSError:
        pass
    return sorted({(p.pw_name, p.pw_dir) for p in pwd.getpwall()
                   if uid_min <= p.pw_uid < 65534 and p.pw_dir not in ("", "/") and os.path.isdir(p.pw_dir)})


def homes_private(homes_dir: str | None = None) -> Check:
    """Home directories readable by everyone let any user list (and often read) others' work;
    ``homes_dir``: check its subdirectories instead of every login account's home."""
    if homes_dir is not None:
        try:
            homes = sorted((n, os.path.join(homes_dir, n)) for n in os.listdir(homes_dir)
                           if os.path.isdir(os.path.join(homes_dir, n)))
        except OSError as e:
            return warn("homes-private", f"cannot list {homes_dir}: {e.strerror}", "check the path")
    else:
        homes = _login_homes()
    open_ = []
    for name, path in homes:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if mode & 0o004:
            open_.append(f"{path} ({mode:04o})")
    if not open_:
        return ok("homes-private", f"{len(homes)} home director{'y is' if len(homes) == 1 else 'ies are'} "
                  "not world-readable")
    shown = ", ".join(open_[:5]) + (f" and {len(open_) - 5} more" if len(open_) > 5 else "")
    return warn("homes-private", f"{len(open_)} world-readable home(s): {shown}",
                "chmod 0750 (or 0700) each home; for new accounts set HOME_MODE 0750 in /etc/login.defs "
                "(DIR_MODE in /etc/adduser.conf)")


def nvidia_volume_mounts(path: str = NVIDIA_CONFIG) -> Check:
    """With volume-mount device lists on, an image's VOLUME under /var/run/nvidia-container-devices
    can ask the NVIDIA runtime for GPUs DS01 did not allocate."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return ok("nvidia-volume-mounts", f"{path} does not exist (volume-mount device lists are off by default)")
    except OSError as e:
        return warn("nvidia-volume-mounts", f"cannot read {path}: {e.strerror}", f"make {path} readable (0644)")
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as e:
        return warn("nvidia-volume-mounts", f"{path} is not valid TOML ({e})", f"fix {path}")
    value = data.get(VOLUME_KEY)
    if value is None:
        return ok("nvidia-volume-mounts", f"{VOLUME_KEY} is not set in {path} (off)")
    if value is False:
        return ok("nvidia-volume-mounts", f"{VOLUME_KEY} = false in {path}")
    return warn("nvidia-volume-mounts", f"{VOLUME_KEY} = {str(value).lower()} in {path}: an image can request "
                "GPUs through a volume", f"set '{VOLUME_KEY} = false' in {path} (then restart docker)")


def docker_group_empty(group: str = "docker") -> Check:
    """Members of the docker group are root on the host, and bypass every DS01 limit."""
    import grp
    import pwd

    try:
        g = grp.getgrnam(group)
    except KeyError:
        return ok("docker-group", f"there is no '{group}' group")
    members = set(g.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid}
    if not members:
        return ok("docker-group", f"the '{group}' group has no members")
    names = ", ".join(sorted(members))
    return warn("docker-group", f"the '{group}' group has members ({names}): they are root on this host and "
                "bypass DS01", "; ".join(f"gpasswd -d {m} {group}" for m in sorted(members)))


def host_checks(*, proc_mounts: str = "/proc/mounts", homes_dir: str | None = None,
                nvidia_config: str = NVIDIA_CONFIG, docker_group: str = "docker") -> list[Check]:
    return [proc_hidepid(proc_mounts), homes_private(homes_dir), nvidia_volume_mounts(nvidia_config),
            docker_group_empty(docker_group)]
