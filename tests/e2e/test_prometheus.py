"""End to end without Docker: the service runs with the container's command and environment, a real Prometheus
scrapes it (with the deployed scrape config and API key), and the latency series and every Grafana query are
read back through Prometheus's HTTP query API. The `tiny` config (random weights): nothing here measures
accuracy."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.client.api import InspectApi
from tests.helpers.deployfiles import DASHBOARD
from tests.helpers.deployment import CAMERA_KEY, DeployedService, Prometheus, start_prometheus
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

PRODUCT = "bottle"
INSPECTIONS = 4
SCRAPE_TIMEOUT_S = 60
RATE_WINDOW = "1m"  # Grafana's $__rate_interval, fixed for these queries
INSPECTED = 'sum(dcpsfr_http_request_duration_seconds_count{route="/inspect",status="200"})'


def value(prometheus: Prometheus, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(deploy_service: DeployedService, tmp_path_factory) -> Iterator[Prometheus]:
    server = start_prometheus(deploy_service, tmp_path_factory.mktemp("prometheus") / "server")
    yield server
    server.process.stop()


@dataclass(frozen=True)
class Traffic:
    """What this module sent the deployed service (shared with the camera client's tests): counts rise by these."""

    inspections: int
    before: dict[str, float]  # each counted query's value before the traffic (0 where it had no series yet)


COUNTED = {
    "inspected": INSPECTED,
    "inspections": 'sum(dcpsfr_inspections_total{job="dcpsfr-inspect"})',
    "references": 'sum(dcpsfr_http_request_duration_seconds_count{route="/products/{product_id}/references",'
    'status="201"})',
}


@pytest.fixture(scope="module")
def traffic(deploy_service: DeployedService, prometheus: Prometheus, bottle_dir: Path) -> Traffic:
    """References for one product, then inspections: one before and the rest after Prometheus scraped the first
    (Prometheus 2.x sees no increase in a series that first appears with its final count, hence no rate)."""
    wait_for(lambda: value(prometheus, 'up{job="dcpsfr-inspect"}') == 1, "a first scrape", SCRAPE_TIMEOUT_S)
    before = {name: value(prometheus, expr) or 0.0 for name, expr in COUNTED.items()}
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    first, *rest = sorted((bottle_dir / "test").glob("*/*.png"))[:INSPECTIONS]
    with InspectApi(deploy_service.url, api_key=CAMERA_KEY) as api:
        api.upload_references(PRODUCT, [(p.name, p.read_bytes()) for p in good])
        api.inspect(PRODUCT, [(first.name, first.read_bytes())])
        wait_for(
            lambda: (value(prometheus, INSPECTED) or 0.0) > before["inspected"],
            "the first inspection in Prometheus",
            SCRAPE_TIMEOUT_S,
        )
        for frame in rest:
            api.inspect(PRODUCT, [(frame.name, frame.read_bytes())])
    expected = before["inspected"] + INSPECTIONS
    wait_for(lambda: value(prometheus, INSPECTED) == expected, f"{INSPECTIONS} more inspections", SCRAPE_TIMEOUT_S)
    return Traffic(INSPECTIONS, before)


def test_prometheus_scrapes_the_service_with_the_deployed_key(prometheus: Prometheus, traffic: Traffic):
    up = prometheus.query('up{job="dcpsfr-inspect"}')
    assert [sample["metric"]["service"] for sample in up] == ["dcpsfr-inspect"]  # the static label of the config
    assert float(up[0]["value"][1]) == 1


def test_latency_series_are_read_back_through_prometheus(prometheus: Prometheus, traffic: Traffic):
    expr = (
        "histogram_quantile(0.95, sum by (route, le) "
        f"(rate(dcpsfr_http_request_duration_seconds_bucket[{RATE_WINDOW}])))"
    )
    p95 = {sample["metric"]["route"]: float(sample["value"][1]) for sample in prometheus.query(expr)}
    assert math.isfinite(p95["/inspect"]) and p95["/inspect"] > 0
    assert value(prometheus, INSPECTED) == traffic.before["inspected"] + traffic.inspections
    assert value(prometheus, COUNTED["inspections"]) == traffic.before["inspections"] + traffic.inspections
    assert value(prometheus, COUNTED["references"]) == traffic.before["references"] + 1


def test_every_dashboard_query_runs_and_has_data(prometheus: Prometheus, traffic: Traffic):
    """Each panel's query is valid PromQL for Prometheus and, after the traffic, returns at least one number
    (routes without requests in the window are NaN, as Grafana shows them: gaps)."""
    board = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_WINDOW)
            result = wait_for(lambda expr=expr: prometheus.query(expr), f"data for {expr}", SCRAPE_TIMEOUT_S)
            numbers = [float(sample["value"][1]) for sample in result]
            assert any(math.isfinite(n) for n in numbers), (panel["title"], expr, result)
    model = prometheus.query("dcpsfr_model_info")[0]["metric"]
    assert model["config"] == "tiny"
