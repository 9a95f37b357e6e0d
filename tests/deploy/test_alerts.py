"""The drift alert rules: valid for Prometheus (`promtool check rules`), behaving as documented on synthetic
series (`promtool test rules tests/deploy/alerts_test.yml`), built only on metrics the service exports, and
loaded by the deployed Prometheus (prometheus.yml's rule_files, mounted by docker-compose.yml)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers.deployfiles import ALERT_RULES, COMPOSE, PROMETHEUS_CONFIG
from tests.helpers.monitoring import exported_series, metric_names, needs_promtool, promtool

UNIT_TESTS = Path(__file__).with_name("alerts_test.yml")
ALERTS = {"DcpsfrAnomalyRateJump", "DcpsfrScoreMedianShift", "DcpsfrNoInspections"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


@needs_promtool
def test_alert_rules_pass_promtool_check():
    checked = promtool("check", "rules", str(ALERT_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests():
    tested = promtool("test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_unit_tests_can_fail(tmp_path: Path):
    """The unit tests assert something: a rule that never fires makes them fail."""
    broken = ALERT_RULES.read_text().replace("> 0.25", "> 1000")
    (tmp_path / "docker" / "prometheus").mkdir(parents=True)
    (tmp_path / "docker" / "prometheus" / "alerts.yml").write_text(broken)
    (tmp_path / "tests" / "deploy").mkdir(parents=True)
    (tmp_path / "tests" / "deploy" / "alerts_test.yml").write_text(UNIT_TESTS.read_text())
    assert promtool("test", "rules", str(tmp_path / "tests" / "deploy" / "alerts_test.yml")).returncode != 0


def test_the_three_drift_alerts_exist_on_exported_metrics():
    exported = exported_series()
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts == ALERTS
    for rule in rules():
        used = metric_names(rule["expr"])
        recorded = set(re.findall(r"\b(dcpsfr:[a-z0-9_:]+)", rule["expr"]))
        assert used or recorded, rule
        assert used <= exported, f"{rule.get('alert') or rule.get('record')}: {used - exported} not exported"


def test_prometheus_loads_the_rules_and_compose_mounts_them():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == [ALERT_RULES.name]  # relative to prometheus.yml, in the container too
    prometheus = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    mounts = dict(volume.split(":")[1::-1] for volume in prometheus["volumes"] if volume.startswith("./"))
    assert (COMPOSE.parent / mounts["/etc/prometheus/prometheus.yml"]).resolve() == PROMETHEUS_CONFIG
    assert (COMPOSE.parent / mounts[f"/etc/prometheus/{ALERT_RULES.name}"]).resolve() == ALERT_RULES
