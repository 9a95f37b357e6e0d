"""End to end: `python -m service` as a real process on a loopback port, driven over HTTP like curl would."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers.images import decode_png
from tests.helpers.processes import free_port, running_service

pytestmark = pytest.mark.e2e


def files(*paths: Path) -> list:
    return [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]


def inspect_scores(client: httpx.Client, images: list[Path]) -> list[float]:
    answer = client.post("/inspect", data={"product_id": "bottle"}, files=files(*images))
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert decode_png(results[0]["mask_png"]).shape == (900, 900)  # the bottle images' own size
    return [r["score"] for r in results]


def test_upload_inspect_restart_inspect_gives_the_same_scores(tmp_path, bottle_dir):
    data_dir = str(tmp_path / "data")
    references = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    queries = [bottle_dir / "test" / "broken_large" / "000.png", bottle_dir / "test" / "good" / "000.png"]
    with running_service(tmp_path, DCPSFR_DATA_DIR=data_dir) as service:
        client = service.client
        assert client.get("/healthz").json() == {"status": "ok"}
        created = client.post("/products/bottle/references", files=files(*references))
        assert created.status_code == 201, created.text
        assert created.json()["n_references"] == 2
        before = inspect_scores(client, queries)
        as_png = client.post("/inspect?format=png", data={"product_id": "bottle"}, files=files(queries[0]))
        assert as_png.headers["content-type"] == "image/png"
        assert float(as_png.headers["X-Anomaly-Score"]) == pytest.approx(before[0], rel=1e-5)
    with running_service(tmp_path, DCPSFR_DATA_DIR=data_dir) as service:
        client = service.client
        assert client.get("/readyz").json()["products"] == 1
        assert client.get("/products/bottle").json()["version"] == 1
        after = inspect_scores(client, queries)
    assert after == pytest.approx(before, rel=1e-5)


def test_missing_weights_offline_start_without_a_traceback_and_say_what_to_run(tmp_path):
    """`make serve` offline: `--fetch-weights` with the hub unreachable says one line, downloads nothing, and the
    service serves anyway: products answer, the model routes answer 503 with that line and the fetch command."""
    env = {
        "DCPSFR_MODEL_CONFIG": "edge",
        "DCPSFR_WEIGHTS_DIR": str(tmp_path / "no-weights"),
        "DCPSFR_DATA_DIR": str(tmp_path / "data"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there: the hub is unreachable at once
    }
    with running_service(tmp_path, args=("--fetch-weights",), **env) as service:
        client = service.client
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "python -m model.weights fetch edge" in ready.json()["detail"]
        assert "cannot reach" in ready.json()["detail"]
        inspect = client.post("/inspect", data={"product_id": "bottle"}, files=[("images", ("a.png", b"x"))])
        assert inspect.status_code == 503
        assert inspect.json()["detail"] == ready.json()["detail"]
        assert client.get("/products").status_code == 200
    text = service.log_tail(0)
    assert "Traceback" not in text
    failures = [line for line in text.splitlines() if "model weights missing" in line]
    assert len(failures) == 1 and "fetching the edge weights failed" in failures[0], text
    assert not (tmp_path / "no-weights").exists() or not any((tmp_path / "no-weights").rglob("*.safetensors"))
