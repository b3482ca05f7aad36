"""Effective per-user limits: user override > first matching group > defaults, field by field.

Pure: the caller supplies the user's Unix groups (the daemon reads them from the system).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ds01.models.config import DEFAULT_LIMITS, Config, GroupLimits, Limits


@dataclass(frozen=True)
class EffectiveLimits:
    """Every limit resolved to a value (never None), plus where each came from.

    ``group`` is the name of the matched limits group (None when no group matched);
    ``sources`` maps each field to ``"user"``, ``"group:<name>"`` or ``"defaults"``.
    """

    max_gpus: float
    max_gpus_per_container: float
    allow_full_gpu: bool
    allow_mig: bool
    cpus: float
    memory: int
    shm_size: int
    pids: int
    max_containers: int
    max_runtime: float
    idle_timeout: float
    gpu_hold_after_stop: float
    priority_weight: float
    max_jobs_queued: int
    max_jobs_running: int
    max_workspace_bytes: int
    max_image_bytes: int
    group: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LIMIT_FIELDS: tuple[str, ...] = tuple(Limits.model_fields)

# A key added to Limits but not here (or the reverse) would silently never apply; stop at import.
assert set(LIMIT_FIELDS) == {f.name for f in fields(EffectiveLimits)} - {"group", "sources"}, (
    "EffectiveLimits and models.config.Limits must have the same keys"
)


def matching_group(cfg: Config, user: str, unix_groups: set[str] | frozenset[str]) -> GroupLimits | None:
    """The first group, in configured order, the user belongs to (Unix group or member list)."""
    for g in cfg.groups:
        if user in g.members or (g.unix_group is not None and g.unix_group in unix_groups):
            return g
    return None


def effective_limits(cfg: Config, user: str, unix_groups: set[str] | frozenset[str]) -> EffectiveLimits:
    """Resolve every limit for ``user``.

    Each field independently takes the user's override if set, else the first matching group's
    value if set, else the configured default. Only the first matching group applies: later groups
    the user is also in are ignored, so the order in the config file is the precedence.
    """
    group = matching_group(cfg, user, unix_groups)
    user_limits = cfg.users.get(user)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in LIMIT_FIELDS:
        v = getattr(user_limits, name) if user_limits is not None else None
        src = "user"
        if v is None and group is not None:
            v, src = getattr(group.limits, name), f"group:{group.name}"
        if v is None:
            v, src = getattr(cfg.defaults, name), "defaults"
        if v is None:
            # Config validation requires complete defaults; this only guards hand-built configs.
            v, src = getattr(DEFAULT_LIMITS, name), "defaults"
        values[name] = v
        sources[name] = src
    return EffectiveLimits(**values, group=group.name if group else None, sources=sources)
