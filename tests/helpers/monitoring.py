"""What the monitoring tests share: the series the service exports, metric names in PromQL, and `promtool`."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from service.metrics import Metrics

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)"
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_series() -> set[str]:
    """Every series name a fresh service registry exposes (histograms with their _bucket/_sum/_count)."""
    names = set()
    for family in Metrics().registry.collect():
        names |= {sample.name for sample in family.samples}
        if family.type == "histogram":  # labelled histograms have no samples before their first observation
            names |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The dcpsfr_* metric names a PromQL expression uses."""
    return set(re.findall(r"\b(dcpsfr_[a-z0-9_]+)", expr))


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run Prometheus's promtool (skip the test with `needs_promtool` where it is not installed)."""
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
