"""The Prometheus config (checked by Prometheus's own `promtool`) and the Grafana dashboard (its queries use only
metrics that the service really exports, and it has the panels operations need)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.helpers.deployfiles import DASHBOARD, GRAFANA, PROMETHEUS_CONFIG
from tests.helpers.monitoring import exported_series, metric_names, needs_promtool, promtool


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_queries(board: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]


@needs_promtool
def test_prometheus_config_syntax():
    checked = promtool("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_prometheus_config_full_check_with_its_key_file(tmp_path: Path):
    """Full check (files included): the credentials file the container gets, here as a temp file."""
    key_file = tmp_path / "metrics-api-key"
    key_file.write_text("k2")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key_file)
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    key_file.unlink()
    assert promtool("check", "config", str(copy)).returncode != 0, "promtool did not check the key file"


def test_dashboard_queries_use_only_exported_metrics():
    exported = exported_series()
    queries = panel_queries(dashboard())
    assert queries
    for title, expr in queries:
        used = metric_names(expr)
        assert used, f"{title}: no dcpsfr metric in {expr!r}"
        assert used <= exported, f"{title}: {used - exported} not exported by the service"


def test_dashboard_has_the_panels_operations_need():
    queries = panel_queries(dashboard())
    exprs = " ".join(expr for _, expr in queries)
    for quantile in ("0.5", "0.95", "0.99"):
        by_route = (
            rf"histogram_quantile\({quantile}, sum by \(route, le\) \(rate\(dcpsfr_http_request_duration_seconds_"
        )
        assert re.search(by_route, exprs), f"no p{quantile} latency by route"
    assert "rate(dcpsfr_inspections_total" in exprs, "no inspections per second"
    assert re.search(r'dcpsfr_inspections_total\{verdict="anomalous"\}.*/', exprs), "no anomaly rate"
    for gauge in ("dcpsfr_queue_depth", "dcpsfr_batch_size_", "dcpsfr_gpu_memory_allocated_bytes"):
        assert gauge in exprs, gauge
    titles = dict(queries)
    assert re.search(r'dcpsfr_inspections_total\{verdict="good"\}.*/', titles["First-pass yield (last hour)"])
    assert "sum by (product)" in titles["First-pass yield by product"]
    assert titles["OK / NG per hour"] == "sum by (verdict) (increase(dcpsfr_inspections_total[1h]))"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path):
    """Each panel's PromQL as a recording rule (Grafana's $__rate_interval as 5m), checked by promtool."""
    rules = [
        {"record": f"dashboard:panel_{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, (_, expr) in enumerate(panel_queries(dashboard()))
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules[0]["expr"] = "sum(rate(dcpsfr_inspections_total[5m])"  # a query cut short: the check can fail
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_dashboard_layout_and_datasource():
    board = dashboard()
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(target["datasource"]["uid"] == uid for target in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area
    assert board["uid"] and board["title"]
