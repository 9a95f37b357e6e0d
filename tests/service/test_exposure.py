"""Secure by default: without API keys only loopback; unauthenticated /readyz says only whether it is ready."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.__main__ import check_exposure, is_loopback
from tests.helpers.apps import tiny_settings

REPO = Path(__file__).resolve().parents[2]
KEYS = "first-key,second-key"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "inspect.example.com"])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)


def test_without_keys_a_network_address_is_refused_with_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match=r"refusing to serve on 0\.0\.0\.0 without API keys.*DCPSFR_ALLOW_ANONYMOUS"):
        check_exposure("0.0.0.0", tiny_settings(tmp_path))


def test_keys_or_loopback_or_explicit_anonymous_are_accepted(tmp_path, caplog):
    check_exposure("0.0.0.0", tiny_settings(tmp_path, api_keys=KEYS))
    check_exposure("127.0.0.1", tiny_settings(tmp_path))
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        check_exposure("0.0.0.0", tiny_settings(tmp_path, allow_anonymous=True))
    assert "WITHOUT authentication" in caplog.text


def test_the_process_refuses_to_start_on_a_network_address_without_keys(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DCPSFR_MODEL_CONFIG": "tiny", "DCPSFR_DATA_DIR": str(tmp_path)}
    env.update({k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")})
    done = subprocess.run(
        [sys.executable, "-m", "service", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr  # one line, no stack trace
    assert done.stderr.startswith("error: refusing to serve on 0.0.0.0 without API keys")


def test_unauthenticated_readyz_says_only_ready(make_client):
    with make_client(api_keys=KEYS) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
        assert client.get("/readyz", headers={"X-API-Key": "wrong"}).json() == {"ready": True}
        detailed = client.get("/readyz", headers={"X-API-Key": "second-key"}).json()
        assert detailed["ready"] is True and detailed["status"] == "ready" and detailed["config"] == "tiny"


def test_unauthenticated_readyz_hides_why_it_is_not_ready(make_client, tmp_path):
    with make_client(
        real_model=True, api_keys=KEYS, model_config_name="edge", weights_dir=tmp_path / "no-weights"
    ) as client:
        anonymous = client.get("/readyz")
        assert anonymous.status_code == 503 and anonymous.json() == {"ready": False}
        detailed = client.get("/readyz", headers={"Authorization": "Bearer first-key"})
        assert detailed.status_code == 503
        assert detailed.json()["ready"] is False and "weights" in detailed.json()["detail"]


def test_without_keys_readyz_has_the_details(client):
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.get("/healthz").json() == {"status": "ok"}
