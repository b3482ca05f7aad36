"""Shipped monitoring config: Prometheus rules pass promtool (syntax and unit tests), and every
Grafana panel queries metrics ds01d actually exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/ds01-rules.yml"
RULES_TEST = REPO / "deploy/prometheus/ds01-rules.test.yml"
DASHBOARD = REPO / "deploy/grafana/ds01-dashboard.json"
# names in PromQL that are functions/keywords, not metrics
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "and", "or", "unless", "on", "ignoring",
                "absent", "max", "min", "avg", "count", "without", "le", "group_left", "group_right", "offset",
                "bool", "topk", "bottomk", "irate", "delta", "deriv", "clamp_min", "clamp_max"}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:  # no silent skip: scripts/host-prepare.sh installs Debian's prometheus package
        pytest.fail("promtool not found; install Debian's 'prometheus' package (scripts/host-prepare.sh does)")
    return exe


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name a ds01d registry exposes (incl. _bucket/_count/_sum/_total), plus `up`."""
    from tests.unit.test_metrics import make_ctx

    from ds01.daemon.metrics import Metrics

    ctx = make_ctx(tmp_path, 5)
    ctx.gpu_source.temperatures = lambda: {d.uuid: 40.0 for d in ctx.inventory.gpus}  # as NVML would give
    m = Metrics(SimpleNamespace(ctx=ctx))
    m.api_latency.labels("GET /v1/health")  # the daemon pre-creates one series per route at startup
    text = generate_latest(m.registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names | {"up"}


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)            # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)             # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)            # ranges
    expr = re.sub(r"by\s*\([^)]*\)|on\s*\([^)]*\)|without\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdw]?", w)}


def test_promtool_check_rules():
    p = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_rule_unit_tests():
    p = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True,
                       cwd=RULES_TEST.parent)
    assert p.returncode == 0, p.stdout + p.stderr


def test_rules_cover_the_required_alerts_and_use_exported_metrics(tmp_path):
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {"DS01DaemonDown", "DS01IdleGpuHeld", "DS01GpuTemperatureHigh", "DS01LowFreeCapacity"} <= alerts
    idle = next(r for r in rules if r.get("alert") == "DS01IdleGpuHeld")
    assert idle["for"] == "30m"
    names = exported_names(tmp_path)
    for r in rules:
        missing = metric_names(r["expr"]) - names
        assert not missing, f"{r.get('alert') or r.get('record')}: unknown metrics {missing}"


def test_dashboard_structure_and_every_query_uses_exported_metrics(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["panels"], list) and dash["panels"]
    assert any(i["name"] == "DS_PROMETHEUS" for i in dash["__inputs"])
    names = exported_names(tmp_path)
    ids = set()
    for p in dash["panels"]:
        assert p["id"] not in ids
        ids.add(p["id"])
        assert p["type"] in {"stat", "gauge", "timeseries", "table", "bargauge", "heatmap"}
        gp = p["gridPos"]
        assert 0 <= gp["x"] < 24 and gp["x"] + gp["w"] <= 24 and gp["h"] > 0
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used = metric_names(t["expr"])
            assert used, f"{p['title']}: no metric in {t['expr']!r}"
            missing = used - names
            assert not missing, f"panel {p['title']!r} queries metrics ds01d does not export: {missing}"


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.95, sum by (le, endpoint) (rate(x_bucket{a="b"}[5m])))') == {"x_bucket"}
    assert metric_names('up{job="ds01"} == 0 or absent(up{job="ds01"})') == {"up"}
