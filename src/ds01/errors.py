"""One error hierarchy for the whole system.

Every error has a stable ``code`` that travels over the API (JSON ``{"error": {code, message,
hint}}``), is re-raised by the client as the same class, and maps to one CLI exit code. The table
below is the only place that mapping lives (pip-style).
"""

from __future__ import annotations

# typing is only for annotations (strings here): importing it costs every CLI start ~5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


class DS01Error(Exception):
    """Base class. ``message`` says what was wrong, ``hint`` what to do next."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, hint: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            d["hint"] = self.hint
        if self.details:
            d["details"] = self.details
        return d


class InvalidInput(DS01Error):
    """The request itself is wrong (bad name, unknown field, impossible value)."""

    code = "invalid_input"
    http_status = 400
    exit_code = 3


class NotFound(DS01Error):
    """The object does not exist *for this caller*.

    Another user's object is reported exactly like a missing one, so a denial reveals nothing.
    """

    code = "not_found"
    http_status = 404
    exit_code = 4


class PermissionDenied(DS01Error):
    """The caller may not do this (admin-only action, file outside their home)."""

    code = "permission_denied"
    http_status = 403
    exit_code = 5


class PolicyDenied(DS01Error):
    """A configured limit or rule refuses the request (quota, image not allowed)."""

    code = "policy_denied"
    http_status = 403
    exit_code = 6


class Conflict(DS01Error):
    """The object's current state does not allow this (already exists, in use)."""

    code = "conflict"
    http_status = 409
    exit_code = 7


class Busy(Conflict):
    """Another request for the same object is in progress; retrying later is the right answer."""

    code = "busy"
    exit_code = 13


class StateBusy(Busy):
    """The state database's write lock stayed taken (another process) past the bounded wait.
    Travels as ``busy`` (exit 13, safe to retry); the message names the state database."""

    http_status = 503


class StateUnavailable(DS01Error):
    """The state database cannot be used: its storage failed (disk full, I/O error, read-only,
    corrupt), or at start-up it is not a DS01 database of a known schema version."""

    code = "state_unavailable"
    http_status = 503
    exit_code = 14


class CapacityExhausted(DS01Error):
    """The quota allows it but the machine has no free device now (use --queue to wait)."""

    code = "capacity"
    http_status = 503
    exit_code = 8


class DaemonUnavailable(DS01Error):
    """The CLI cannot reach ds01d."""

    code = "daemon_unavailable"
    http_status = 503
    exit_code = 9


class RuntimeFailure(DS01Error):
    """The container runtime (Docker) failed in a way the user cannot fix by changing input."""

    code = "runtime_error"
    http_status = 502
    exit_code = 10


class EngineUnavailable(RuntimeFailure):
    """The container engine does not answer (stopped, restarting or hung). Daemon side only: it
    crosses the API as a ``runtime_error`` (same exit code, 10), its message naming the engine."""

    http_status = 503


class NodeUnavailable(EngineUnavailable):
    """Cluster mode: a node's agent does not answer (or refused the head's credential). Daemon
    side only, like EngineUnavailable: exit 10, the message naming the node."""


class SchedulerFailure(RuntimeFailure):
    """Cluster mode: a Slurm command failed or did not answer (the message says which and why)."""


class BuildFailed(DS01Error):
    """An image build failed (the message carries the failing step and its last output lines)."""

    code = "build_failed"
    http_status = 422
    exit_code = 11


class ConfigError(DS01Error):
    """The daemon's configuration is invalid; the daemon refuses to start (fail closed)."""

    code = "config_error"
    http_status = 500
    exit_code = 12


class Interrupted(DS01Error):
    code = "interrupted"
    http_status = 499
    exit_code = 130


ERRORS: dict[str, type[DS01Error]] = {
    cls.code: cls
    for cls in (
        DS01Error,
        InvalidInput,
        NotFound,
        PermissionDenied,
        PolicyDenied,
        Conflict,
        Busy,
        StateUnavailable,
        CapacityExhausted,
        DaemonUnavailable,
        RuntimeFailure,
        BuildFailed,
        ConfigError,
        Interrupted,
    )
}


def from_dict(d: dict[str, Any]) -> DS01Error:
    """Rebuild the error a daemon sent (unknown codes become the base class, keeping the text)."""
    cls = ERRORS.get(str(d.get("code")), DS01Error)
    return cls(str(d.get("message", "unknown error")), d.get("hint"), d.get("details") or None)
