"""ds01.client.api: every request it sends is one the daemon accepts. Each function is called
with every option set through a recording fake transport; each body must validate against the
daemon's request model (``extra="forbid"``), each query parameter must be one the endpoint knows."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest

from ds01.client import api
from ds01.models import api as models

# (method, path pattern) -> the request model of its body (None: the endpoint reads no body) and
# the query parameters it accepts (as in the daemon's route handlers)
ROUTES: dict[tuple[str, str], tuple[type | None, set[str]]] = {
    ("GET", r"/v1/health"): (None, set()),
    ("GET", r"/v1/whoami"): (None, set()),
    ("GET", r"/v1/ssh/host-key"): (None, set()),
    ("POST", r"/v1/containers"): (models.CreateContainer, set()),
    ("POST", r"/v1/containers/deploy"): (models.DeployContainer, set()),
    ("POST", r"/v1/containers/[^/]+/start"): (models.StartContainer, set()),
    ("POST", r"/v1/containers/[^/]+/stop"): (models.StopContainer, set()),
    ("POST", r"/v1/containers/[^/]+/remove"): (models.RemoveContainer, set()),
    ("POST", r"/v1/containers/[^/]+/retire"): (models.RetireContainer, set()),
    ("POST", r"/v1/containers/[^/]+/keepalive"): (models.KeepAlive, set()),
    ("GET", r"/v1/containers"): (None, {"all_users", "user", "running"}),
    ("GET", r"/v1/containers-stats"): (None, {"all_users", "user", "running"}),
    ("GET", r"/v1/images"): (None, {"all_users", "user"}),
    ("GET", r"/v1/images/[^/]+"): (None, {"user"}),
    ("POST", r"/v1/images/[^/]+/build"): (models.BuildImage, set()),
    ("POST", r"/v1/images/[^/]+/delete"): (models.DeleteImage, set()),
    ("GET", r"/v1/images-catalog"): (None, {"framework"}),
    ("GET", r"/v1/images-select"): (None, {"framework"}),
    ("POST", r"/v1/admin/base-image/bootstrap"): (models.BootstrapBaseImage, set()),
    ("POST", r"/v1/images-pull"): (models.PullImage, set()),
    ("POST", r"/v1/admin/images/pull"): (models.AdminPullImages, set()),
    ("GET", r"/v1/admin/images/usage"): (None, set()),
    ("POST", r"/v1/admin/images/prune"): (models.PruneImages, set()),
    ("GET", r"/v1/gpus"): (None, set()),
    ("GET", r"/v1/limits"): (None, {"user"}),
    ("GET", r"/v1/queue"): (None, {"all_users"}),
    ("POST", r"/v1/queue/\d+/cancel"): (None, set()),
    ("GET", r"/v1/admin/exemptions"): (None, {"all"}),
    ("POST", r"/v1/admin/exemptions"): (models.GrantExemption, set()),
    ("POST", r"/v1/admin/exemptions/\d+/revoke"): (None, set()),
    ("GET", r"/v1/status"): (None, set()),
    ("GET", r"/v1/admin/dashboard"): (None, {"stats"}),
    ("GET", r"/v1/events"): (None, {"since", "user", "type", "result", "limit", "all"}),
    ("GET", r"/v1/usage"): (None, {"since", "until", "by", "user", "all_users"}),
    ("POST", r"/v1/admin/reload"): (None, set()),
    ("GET", r"/v1/admin/limits"): (None, {"user", "group"}),
    ("POST", r"/v1/admin/limits"): (models.LimitsChange, set()),
    ("GET", r"/v1/admin/users"): (None, set()),
    ("GET", r"/v1/admin/doctor"): (None, set()),
    ("POST", r"/v1/admin/cluster/sync"): (models.ClusterSync, set()),
    ("POST", r"/v1/admin/catalog/refresh"): (models.CatalogRefresh, set()),
    ("POST", r"/v1/admin/backup"): (None, {"download"}),
    ("POST", r"/v1/jobs"): (models.SubmitJob, set()),
    ("GET", r"/v1/jobs"): (None, {"all", "state", "all_users"}),
    ("GET", r"/v1/jobs/\d+"): (None, set()),
    ("GET", r"/v1/jobs/\d+/logs"): (None, {"offset", "tail"}),
    ("POST", r"/v1/jobs/\d+/cancel"): (None, set()),
    ("POST", r"/v1/jobs/\d+/rerun"): (None, set()),
}

P = "my-proj"
GPU = {"gpus": 1, "gpu_profile": "1g.5gb", "mig": 2, "queue": True}
# every function with every option it has: the most any caller can send
CALLS = {
    "health": ((), {}),
    "whoami": ((), {}),
    "ssh_host_key": ((), {}),
    "container_create": ((P,), {"image": "img:1", "cpu_only": True, "ports": [8888], "user": "bob", **GPU}),
    "container_deploy": ((P,), {"image": "img:1", "cpu_only": False, "ports": [8888], "user": "bob", **GPU}),
    "container_start": ((P,), {"user": "bob"}),
    "container_stop": ((P,), {"timeout": 3.5, "user": "bob"}),
    "container_remove": ((P,), {"force": True, "user": "bob"}),
    "container_retire": ((P,), {"timeout": 1.0, "user": "bob"}),
    "container_keepalive": ((P,), {"seconds": 600.0, "user": "bob"}),
    "containers": ((), {"running": True, "all_users": True, "user": "bob"}),
    "container_stats": ((), {"all_users": True, "user": "bob"}),
    "images": ((), {"all_users": True, "user": "bob"}),
    "image": ((P,), {"user": "bob"}),
    "image_build": ((P,), {"no_cache": True, "user": "bob"}),
    "image_delete": ((P,), {"force": True, "user": "bob"}),
    "images_catalog": ((), {"framework": "pytorch"}),
    "images_select": ((), {"framework": "pytorch==2.5"}),
    "base_image_bootstrap": ((), {"suite": "bookworm", "tag": "ds01/base:latest", "force": True}),
    "image_pull": (("pytorch/pytorch:2.5.1",), {}),
    "admin_images_pull": ((["pytorch/pytorch:2.5.1"],), {"defaults": True}),
    "admin_images_usage": ((), {}),
    "admin_images_prune": ((), {"unused_for": 86400.0, "dry_run": True, "only": ["pytorch/"]}),
    "gpus": ((), {}),
    "limits": ((), {"user": "bob"}),
    "queue": ((), {"all_users": True}),
    "queue_cancel": ((12,), {}),
    "exemptions": ((), {}),
    "exemption_grant": (("bob",), {"seconds": 3600.0, "kind": "idle", "reason": "deadline"}),
    "exemption_revoke": ((4,), {}),
    "status": ((), {}),
    "dashboard": ((), {"stats": False}),
    "events": ((), {"since": "2h", "user": "bob", "types": ["container", "gpu"], "results": ["denied"], "limit": 5,
                    "all": True}),
    "usage": ((), {"since": "30d", "until": "1d", "by": "group", "user": "bob", "all_users": True}),
    "admin_reload": ((), {}),
    "admin_limits": ((), {"user": "bob", "group": "students"}),
    "admin_limits_change": ((), {"user": "bob", "group": "students", "defaults": True,
                                 "set": {"max_gpus": 2, "memory": "32g"}, "unset": ["cpus"]}),
    "admin_users": ((), {}),
    "admin_doctor": ((), {}),
    "admin_cluster_sync": ((), {"apply": True}),
    "admin_catalog_refresh": ((), {"families": ["pytorch"], "registry": "http://127.0.0.1:5000", "dry_run": True}),
    "admin_backup": ((), {"download": True}),
    "job_submit": ((P, ["python3", "-c", "print(42)"]), {"gpus": 1, "gpu_profile": "1g.5gb", "mig": 2, "time": "4h",
                                                         "name": "sweep", "array": "0-9%2", "after": [3, 4],
                                                         "env": ["A=1"], "requeue": True, "mail": True}),
    "jobs": ((), {"all": True, "state": "failed", "all_users": True}),
    "job": ((7,), {}),
    "job_logs": ((7,), {"offset": 10, "tail": 5}),
    "job_cancel": ((7,), {}),
    "job_rerun": ((7,), {}),
}
NOT_REQUESTS = {"exec_path"}  # builds a path; the WebSocket is opened by ds01.client.stream


class Recorder:
    """The transport's interface (``call``/``stream``), recording instead of sending."""

    def __init__(self):
        self.sent: list[tuple[str, str, object, dict | None]] = []

    def call(self, method, path, body=None, params=None):
        self.sent.append((method, path, body, params))
        return {}

    def stream(self, method, path, body=None, params=None):
        self.sent.append((method, path, body, params))
        return iter(())


def route(method: str, path: str):
    for (m, pattern), spec in ROUTES.items():
        if m == method and re.fullmatch(pattern, path):
            return spec
    raise AssertionError(f"{method} {path}: no such endpoint in the daemon")


def public_functions() -> set[str]:
    return {n for n, f in vars(api).items() if inspect.isfunction(f) and not n.startswith("_")
            and f.__module__ == api.__name__}


def test_every_function_is_checked():
    assert public_functions() - NOT_REQUESTS == set(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("options", ["all", "none"])
def test_every_request_is_accepted_by_the_daemons_models(name, options):
    args, kwargs = CALLS[name]
    if options == "none":  # only what is required
        sig = inspect.signature(getattr(api, name))
        kwargs = {k: v for k, v in kwargs.items() if sig.parameters[k].default is inspect.Parameter.empty}
    rec = Recorder()
    getattr(api, name)(rec, *args, **kwargs)
    assert len(rec.sent) == 1
    method, path, body, params = rec.sent[0]
    model, allowed = route(method, path)
    if model is None:
        assert body in (None, {}), f"{name} sends a body the endpoint does not read"
    else:
        assert isinstance(body, dict)
        model.model_validate(body)  # extra="forbid": an unknown field raises
        if options == "all":
            # every option given reaches the daemon (none dropped on the way)
            sent = {k for k in kwargs if k not in ("types", "results")}
            assert sent <= set(body), f"{name} drops {sent - set(body)}"
    clean = {k for k, v in (params or {}).items() if v not in (None, False)}
    assert clean <= allowed, f"{name}: query parameters {clean - allowed} are unknown to the endpoint"


def test_paths_quote_the_project():
    rec = Recorder()
    api.container_start(rec, "a b/c")
    assert rec.sent[0][1] == "/v1/containers/a%20b%2Fc/start"
    assert api.exec_path("x y") == "/v1/containers/x%20y/exec"


def test_options_left_at_none_are_not_sent():
    rec = Recorder()
    api.container_stop(rec, P)
    api.container_create(rec, P, cpu_only=False)
    assert rec.sent[0][2] == {} and rec.sent[1][2] == {"project": P, "cpu_only": False}


def test_importing_the_client_loads_nothing_heavy():
    code = ("import sys\nimport ds01.client.api, ds01.client.http\n"
            "bad = [m for m in ('click', 'pydantic', 'docker', 'rich', 'aiohttp', 'http.client', 'typing')"
            " if m in sys.modules]\nprint('HEAVY:' + ','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "HEAVY:"
