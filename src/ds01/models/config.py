"""The daemon's configuration (``/etc/ds01/config.yaml``), validated at start.

Every model forbids unknown keys, so a misspelt key stops the daemon with its name and line
instead of being silently ignored. No file means the embedded defaults below, which are the
documented defaults (``ds01d --print-default-config`` prints them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from ds01.errors import ConfigError
from ds01.models.cluster import ClusterConfig
from ds01.units import parse_duration, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(Strict):
    """Per-user resource limits. Any key left out falls through to the next level
    (user override > group > defaults)."""

    max_gpus: float | None = Field(None, ge=0, description="GPU-equivalents held at once")
    max_gpus_per_container: float | None = Field(None, ge=0)
    allow_full_gpu: bool | None = None
    allow_mig: bool | None = None
    cpus: float | None = Field(None, gt=0, le=4096)
    memory: Size | None = Field(None, gt=4 * 1024**2)
    shm_size: Size | None = Field(None, gt=0)
    pids: int | None = Field(None, ge=16, le=4_194_304)
    max_containers: int | None = Field(None, ge=0)
    max_runtime: Duration | None = Field(None, ge=0)
    idle_timeout: Duration | None = Field(None, ge=0)
    gpu_hold_after_stop: Duration | None = Field(None, ge=0)
    priority_weight: float | None = Field(None, gt=0)
    # batch jobs (issue 14): waiting and running at once; running jobs also count in max_gpus
    max_jobs_queued: int | None = Field(None, ge=0)
    max_jobs_running: int | None = Field(None, ge=0)
    # a user's workspace bytes (issue 16); 0 = no limit. Enforced with a filesystem user quota
    # where the workspace filesystem has them (see ``disk``), else reported as not enforced
    max_workspace_bytes: Size | None = Field(None, ge=0)
    # a user's project image bytes, shared layers once (issue 17); 0 = no limit. A build that
    # would go over it is refused (the new image removed), saying how much the user's images use
    max_image_bytes: Size | None = Field(None, ge=0)


DEFAULT_LIMITS = Limits(
    max_gpus=1.0,
    max_gpus_per_container=1.0,
    allow_full_gpu=True,
    allow_mig=True,
    cpus=4,
    memory=16 * 1024**3,
    shm_size=2 * 1024**3,
    pids=4096,
    max_containers=3,
    max_runtime=48 * 3600,
    idle_timeout=2 * 3600,
    gpu_hold_after_stop=15 * 60,
    priority_weight=1.0,
    max_jobs_queued=100,
    max_jobs_running=4,
    max_workspace_bytes=0,
    max_image_bytes=0,
)


class GroupLimits(Strict):
    """A limits group: Unix group membership (``unix_group``) and/or an explicit member list.
    Groups are matched in configured order; the first match wins."""

    name: str = Field(min_length=1)
    unix_group: str | None = None
    members: list[str] = []
    limits: Limits = Limits()


class MigInstance(Strict):
    profile: str = Field(pattern=r"^\d+g\.\d+gb(\+me)?$")


class SimulatedGpu(Strict):
    name: str = "NVIDIA A100-SXM4-40GB"
    memory: Size = 40 * 1024**3
    mig: list[str] | None = None  # MIG profiles this card is split into, e.g. ["3g.20gb", "4g.20gb"]


class SimulatedInventory(Strict):
    driver_version: str = "550.54.15"
    cuda_version: str = "12.4"
    gpus: list[SimulatedGpu] = Field(
        default_factory=lambda: [
            SimulatedGpu(),
            SimulatedGpu(),
            SimulatedGpu(),
            SimulatedGpu(mig=["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]),
        ]
    )


class GpuConfig(Strict):
    inventory: Literal["auto", "nvml", "simulated", "none"] = "auto"
    binding: Literal["runtime", "device-requests", "cdi"] = "runtime"
    runtime_name: str = "nvidia"
    simulated: SimulatedInventory = SimulatedInventory()


# what people expect in a shell: git, curl, ssh (client, and sshd for container-ssh), less, an
# editor, ps
DEFAULT_TOOLS = ("git", "curl", "openssh-client", "openssh-server", "less", "vim-tiny", "procps")


class ImagesConfig(Strict):
    default: str = "ds01/base:latest"
    # Image references must start with one of these prefixes (fail closed: empty = nothing allowed).
    allowed: list[str] = [
        "ds01/",
        "ds01-test/",
        "pytorch/pytorch",
        "nvcr.io/nvidia/",
        "tensorflow/tensorflow",
        "aimehub/",
        "python:",
        "debian:",
        "ubuntu:",
    ]
    # Debian/Ubuntu packages every DS01-written Dockerfile installs when the base image lacks
    # them (the offline base has them: images/bootstrap.py); [] = none.
    tools: list[str] = Field(default_factory=lambda: list(DEFAULT_TOOLS))
    # Pulls (issue 17): registry -> mirror host[:port][/prefix] ("docker.io", "nvcr.io", any
    # other); a pull of <registry>/<path>:<tag> is fetched as <mirror>/<path>:<tag> and tagged
    # with the name asked for. No fallback to the registry itself: a lab that sets a mirror
    # wants every server to go through it.
    mirrors: dict[str, str] = Field(default_factory=dict)
    # Root-only (mode 0600) JSON file {"<registry or mirror>": {"username": …, "password": …}}
    # (an NGC API key: username "$oauthtoken"); never readable by users.
    credentials_file: str | None = "/etc/ds01/registry-auth.json"
    pull_timeout: Duration = 3600
    pull_retries: int = Field(2, ge=0, le=10)

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str]) -> list[str]:
        import re

        bad = [t for t in v if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]{1,127}", t)]
        if bad:
            raise ValueError(f"not Debian package names: {', '.join(map(repr, bad))}")
        return list(dict.fromkeys(v))


class BuildConfig(Strict):
    ca_bundle: str | None = "/etc/ssl/certs/ca-certificates.crt"
    # pip_index_url, pip_extra_index_url and http_proxy become build args of EVERY user's build
    # (PIP_INDEX_URL, HTTP_PROXY, …): any user can print them (RUN echo $HTTP_PROXY) and they can
    # end up in image history. Never put credentials (user:password@, tokens) in these URLs; use
    # an index/proxy that authenticates the host by network instead.
    pip_index_url: str | None = None
    pip_extra_index_url: str | None = None
    http_proxy: str | None = None
    # Also give running containers the CA bundle, pip index and proxy above (environment
    # variables and a read-only CA file, never in the image), so `pip install` inside a container
    # works wherever it works in a build. Off by default: users then see these settings.
    in_containers: bool = False
    max_context: Size = 512 * 1024**2
    timeout: Duration = 3600
    max_concurrent_per_user: int = Field(1, ge=1, le=16)
    # A rebuild is a no-op without reading the context when the context's metadata (size, mtime,
    # ctime, inode, mode, owner of every file) equals what the last build saw. Files changed less
    # than stamp_racy_window ago are never trusted (timestamps are coarse). Raise it for a
    # workspace filesystem whose clock may lag the host's (NFS); 0 turns the shortcut off.
    stamp_racy_window: Duration = Field(2, ge=0, le=3600)
    # A directory of wheels (and sdists) on the host: every build gets it read-only as a pip
    # find-links source (PIP_FIND_LINKS), so labs without internet can still install packages.
    # It is served over HTTP on wheelhouse_address ("" = the docker0 bridge's address, where
    # build steps reach the host) and wheelhouse_port; only the files directly in it, GET only.
    wheelhouse: str | None = Field(None, pattern=r"^/[A-Za-z0-9_./-]*$")
    wheelhouse_address: str = Field("", pattern=r"^([0-9]{1,3}(\.[0-9]{1,3}){3})?$")
    wheelhouse_port: int = Field(9103, ge=1, le=65535)


class DataMount(Strict):
    source: str
    target: str = Field(pattern=r"^/[A-Za-z0-9_./-]+$")


class ContainersConfig(Strict):
    # Template for a user's workspace base; {home} and {user} are filled in.
    workspace_base: str = "{home}/workspace"
    # new workspaces are private to their owner (0700); with a group here, 0750 and that group
    # (for users who are members of it), so a lab can share projects (issue 15)
    workspace_group: str = Field("", pattern=r"^([a-z_][a-z0-9_.-]{0,31})?$")
    data_mounts: list[DataMount] = []
    stop_timeout: Duration = Field(10, ge=0, le=3600)
    name_prefix: str = Field("ds01", pattern=r"^[a-z][a-z0-9-]{0,15}$")


class QueueConfig(Strict):
    """Fair queue: score = decayed GPU-hours / priority_weight, minus waited time / aging."""

    half_life: Duration = Field(7 * 86400, gt=0)
    # Waiting this long offsets one GPU-hour of past usage, so every request reaches the head.
    aging: Duration = Field(3600, gt=0)


class IdleThresholds(Strict):
    """A container is idle at a sample when every signal is at or below its threshold.
    ``None`` switches a signal off. GPU utilization is the highest of the container's own devices;
    a device the driver gives no figure for (MIG instances) is unknown and ignored, so MIG
    containers are judged on the other signals."""

    gpu_percent: float | None = Field(5.0, ge=0, le=100)
    # average over the sampling interval, in % of one core (200 = two cores busy)
    cpu_percent: float | None = Field(5.0, ge=0)
    # non-shell processes (shells, init, `sleep infinity`, tmux/screen are not counted). Off by
    # default: an idle notebook or REPL would otherwise keep its GPUs forever.
    processes: int | None = Field(None, ge=0)
    # network bytes in+out per second (read only when set)
    network_bytes_per_s: float | None = Field(None, ge=0)


class LifecycleConfig(Strict):
    """Idle reclaim, max runtime and cleanup (issue 6). Timeouts themselves are per-user limits
    (``idle_timeout``, ``max_runtime``, ``gpu_hold_after_stop``); 0 switches one off."""

    enabled: bool = True
    thresholds: IdleThresholds = IdleThresholds()
    # per limits-group name (``groups[].name``); a group not listed uses ``thresholds``
    group_thresholds: dict[str, IdleThresholds] = {}
    # after a (re)start, idle time only counts from started_at + startup_grace. 0 by default: the
    # idle timeout (hours) already covers start-up, and "stopped N s after it went idle" holds
    # from the first second; set e.g. 5m where busy-machine shrinking makes timeouts short.
    startup_grace: Duration = Field(0, ge=0)
    # the machine is busy when this share of GPU-equivalents is held, or anyone is queued; then
    # idle timeouts of GPU-holding containers are multiplied by busy_factor
    busy_share: float = Field(0.9, gt=0, le=1)
    busy_factor: float = Field(0.5, gt=0, le=1)
    idle_warnings: list[float] = Field(default_factory=lambda: [0.8, 0.95])
    runtime_warnings: list[float] = Field(default_factory=lambda: [0.75, 0.9])
    # a warning sent late (daemon was down, timeout shrank, exemption ended) is followed by the
    # action after the normal gap between the last warning and the deadline, at most this long
    max_late_notice: Duration = Field(600, ge=0)
    keepalive_default: Duration = Field(2 * 3600, gt=0)
    keepalive_max: Duration = Field(8 * 3600, gt=0)
    # stopped containers are removed after this (0 = never); the workspace is never touched
    container_hold_after_stop: Duration = Field(3 * 86400, ge=0)
    # created and never started: removed after this (0 = never)
    never_started_timeout: Duration = Field(3600, ge=0)
    # an automatic stop sends SIGTERM, then SIGKILL after this
    stop_grace: Duration = Field(30, ge=0, le=3600)
    # process names (``/proc/<pid>/comm``) that never make a container busy; an entry with a '/'
    # matches a command's path instead (its first argument contains it): the VS Code server
    # counts as a shell, like an SSH session's sshd (container-ssh), not as work
    ignore_processes: list[str] = Field(default_factory=lambda: [
        "sh", "bash", "zsh", "dash", "ash", "fish", "ksh", "tcsh", "csh", "docker-init", "tini", "init",
        "tmux: server", "tmux: client", "screen", "login", "su", "sudo",
        "sshd", "sshd-session", "sshd-auth", "sftp-server", "/.vscode-server/"])

    @field_validator("idle_warnings", "runtime_warnings")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("warning points are fractions of the timeout, each between 0 and 1 (e.g. 0.8)")
        if sorted(set(v)) != list(v):
            raise ValueError("warning points must be increasing and distinct")
        return v

    @model_validator(mode="after")
    def _keepalive(self) -> "LifecycleConfig":
        if self.keepalive_default > self.keepalive_max:
            raise ValueError("keepalive_default cannot exceed keepalive_max")
        return self


class DaemonConfig(Strict):
    # Containers carry ds01.instance=<this>; a daemon only manages (and adopts) its own instance's.
    instance: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")
    socket_mode: int = Field(0o666, ge=0, le=0o777)
    max_body: Size = 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tick_interval: Duration = Field(60, gt=0)
    events_max_bytes: Size = 50 * 1024**2
    # rotated generations of events.jsonl kept beside it (.1 … .N); the state DB keeps the full history
    events_keep: int = Field(5, ge=1, le=100)
    # events older than this are dropped from the state DB (usage comes from allocations, kept)
    events_retention: Duration = Field(400 * 86400, gt=0)
    # connection bounds on the API socket (issue 15): one user cannot exhaust the daemon; the last
    # ``admin_connection_reserve`` of ``max_connections`` are kept for root and admins
    max_connections: int = Field(1024, ge=16, le=100_000)
    max_connections_per_user: int = Field(64, ge=1, le=100_000)
    admin_connection_reserve: int = Field(32, ge=0, le=10_000)
    # a connection with no request in progress (none yet, or an idle keep-alive) is closed after this
    connection_idle_timeout: Duration = Field(5, gt=0, le=3600)


def _listen_address(v: Any) -> Any:
    """``host:port`` on which an observability listener binds ("" = off). Validated so a typo stops
    the daemon at start instead of silently exposing nothing (or everything)."""
    if v is None or v == "":
        return ""
    if not isinstance(v, str):
        raise ValueError("a listen address is a string like '127.0.0.1:9101'")
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not HOST:PORT (e.g. '127.0.0.1:9101'; '' turns the listener off)")
    return v


ListenAddress = Annotated[str, BeforeValidator(_listen_address)]


class MetricsConfig(Strict):
    """Prometheus metrics (prometheus-client text format) on a local TCP address."""

    listen: ListenAddress = "127.0.0.1:9101"
    # scrapes served at once (one thread each); more are refused with a 503
    max_connections: int = Field(16, ge=1, le=1000)


class WebConfig(Strict):
    """The read-only status page (HTML + ``status.json``) on a local TCP address; reach it through
    an SSH tunnel (``ssh -L 9102:127.0.0.1:9102 host``)."""

    listen: ListenAddress = "127.0.0.1:9102"
    refresh: Duration = Field(10, ge=1, le=3600)
    # user and project names appear on the page only when the admin enables them (issue 15);
    # hide_user_names (older key) still hides them whatever show_user_names says
    show_user_names: bool = False
    hide_user_names: bool = False
    # open connections (browsers, probes) the page serves at once; more are refused with a 503
    max_connections: int = Field(64, ge=1, le=10_000)
    recent_events: int = Field(20, ge=0, le=500)


class ObservabilityConfig(Strict):
    metrics: MetricsConfig = MetricsConfig()
    web: WebConfig = WebConfig()


class JobsConfig(Strict):
    """Batch jobs (issue 14): logs, retention, the grace between SIGTERM and kill."""

    # each job's log file (under the daemon's state dir) stops growing at this size
    log_max_bytes: Size = Field(10 * 1024**2, ge=1024)
    # ended jobs' records and logs are dropped after this (0 = kept)
    retention: Duration = Field(30 * 86400, ge=0)
    # at the time limit or a cancel: SIGTERM, then SIGKILL after this
    kill_grace: Duration = Field(10, ge=0, le=3600)
    max_array_tasks: int = Field(1000, ge=1, le=100_000)


class SmtpConfig(Strict):
    """A mail relay for job notifications (users opt in with ``job-submit --mail``)."""

    host: str = Field(min_length=1)
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field("ds01@localhost", min_length=3)
    # the recipient of a user's mail; {user} is the login name
    address: str = "{user}@localhost"
    starttls: bool = False
    timeout: Duration = Field(10, gt=0, le=120)


class EngineConfig(Strict):
    """The container engine the daemon talks to, and how long it waits for its answers."""

    # "" = ds01d's --docker-url, else DOCKER_HOST, else the local socket
    url: str = ""
    # an engine that does not answer a read (inspect, list) in this long is reported as not
    # answering (exit 10) instead of leaving the caller waiting
    timeout: Duration = Field(3, gt=0, le=60)
    # the wait for a change (create, start, remove); builds, logs and exec streams have none
    call_timeout: Duration = Field(120, gt=0, le=3600)


class NotifyConfig(Strict):
    smtp: SmtpConfig | None = None


class DiskConfig(Strict):
    """Workspace and image bytes per user (issue 16). Measured by the daemon in the background,
    each user at most every ``sample_interval`` (never per request); ``check-limits`` and the
    dashboard show the last measurement and its age."""

    sample_interval: Duration = Field(600, ge=1)
    # one user's workspace walk stops after this long or this many entries; the figure is then
    # a lower bound, shown as such (a filesystem quota's own count is exact and used instead)
    walk_budget: Duration = Field(10, gt=0, le=600)
    max_entries: int = Field(2_000_000, ge=1000)
    # set a user quota (setquota) on the workspace filesystem for max_workspace_bytes where it
    # supports quotas (ext4/XFS mounted with usrquota, quotas on); false = report only
    quotas: bool = True
    # a running container of a user over max_workspace_bytes is warned again after this
    warn_interval: Duration = Field(6 * 3600, gt=0)


class Config(Strict):
    admin_group: str = "ds01-admin"
    daemon: DaemonConfig = DaemonConfig()
    containers: ContainersConfig = ContainersConfig()
    images: ImagesConfig = ImagesConfig()
    build: BuildConfig = BuildConfig()
    gpu: GpuConfig = GpuConfig()
    queue: QueueConfig = QueueConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    jobs: JobsConfig = JobsConfig()
    notify: NotifyConfig = NotifyConfig()
    engine: EngineConfig = EngineConfig()
    disk: DiskConfig = DiskConfig()
    cluster: ClusterConfig = ClusterConfig()
    defaults: Limits = DEFAULT_LIMITS
    groups: list[GroupLimits] = []
    users: dict[str, Limits] = {}

    @field_validator("defaults", mode="before")
    @classmethod
    def _defaults_over_embedded(cls, v: Any) -> Any:
        # A config that sets only some defaults keeps the embedded values for the rest.
        if isinstance(v, dict):
            return {**DEFAULT_LIMITS.model_dump(), **v}
        return v

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, groups: list[GroupLimits]) -> list[GroupLimits]:
        names = [g.name for g in groups]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"group names must be unique; repeated: {', '.join(sorted(dupes))}")
        return groups

    @model_validator(mode="after")
    def _checks(self) -> "Config":
        missing = [k for k, v in DEFAULT_LIMITS.model_dump().items() if getattr(self.defaults, k) is None]
        if missing:
            raise ValueError(f"defaults must set every limit; missing: {', '.join(missing)}")
        unknown = sorted(set(self.lifecycle.group_thresholds) - {g.name for g in self.groups})
        if unknown:
            raise ValueError(f"lifecycle.group_thresholds names unknown group(s): {', '.join(unknown)}")
        return self


def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    """Walk a PyYAML node tree along a pydantic error location to find the source line."""
    import yaml

    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line = k.start_mark.line + 1
                    node = v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _keys_at(loc: tuple) -> list[str]:
    """The valid keys of the mapping at ``loc`` (a path into Config), [] when it has no fixed keys."""
    import typing

    def unwrap(t):
        for a in (typing.get_args(t) if typing.get_origin(t) in (typing.Union, typing.Annotated)
                  or type(t).__name__ == "UnionType" else ()):
            if (isinstance(a, type) and issubclass(a, BaseModel)) or typing.get_origin(a) in (dict, list):
                return a
        return t

    t: object = Config
    for part in loc:
        t = unwrap(t)
        if isinstance(t, type) and issubclass(t, BaseModel) and isinstance(part, str) and part in t.model_fields:
            t = t.model_fields[part].annotation
        elif typing.get_origin(t) in (dict, list):
            t = typing.get_args(t)[-1]
        else:
            return []
    t = unwrap(t)
    return list(t.model_fields) if isinstance(t, type) and issubclass(t, BaseModel) else []


def _unknown_key(loc: tuple) -> str:
    """"unknown key", with the nearest valid key at the same place when one is close."""
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1, cutoff=0.6) if loc else []
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key (misspelt?)"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Validate YAML text; raise ConfigError naming each bad key and its line."""
    import yaml

    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) if node is not None else {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}", "fix the syntax and run 'ds01d --check-config FILE'")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(node, loc)
            where = f"{source}:{line}" if line else source
            msg = _unknown_key(loc) if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {key}: {msg}")
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(problems),
            "fix the keys named above; 'ds01d --print-default-config' shows every valid key",
        )


def load_config(path: Path | str | None) -> Config:
    """Load the config file; a missing file gives the embedded defaults."""
    if path is None:
        return Config()
    p = Path(path)
    if not p.exists():
        return Config()
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}")
    return parse_config(text, str(p))


def default_config_yaml() -> str:
    import yaml

    return yaml.safe_dump(Config().model_dump(mode="json"), sort_keys=False)
