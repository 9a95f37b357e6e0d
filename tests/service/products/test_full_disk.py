"""A full (or failing) data disk: every storage error on the write path is a 507 naming the blob folder in the data
dir, whatever library raised it, no row changes, and no temporary file is left behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from safetensors import SafetensorError

import model.references
from tests.helpers.apps import upload
from tests.helpers.images import image_bytes


def full_disk_safetensors(tensors, path, *args, **kwargs):
    Path(path).write_bytes(b"\0" * 100)  # a partial file, as a write cut by a full disk leaves one
    raise SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )


def full_disk_oserror(tensors, path, *args, **kwargs):
    Path(path).write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, "No space left on device")


def full_disk_write(path: Path, data: bytes) -> None:
    path.touch()  # the temporary file exists when the disk fills up
    raise OSError(errno.ENOSPC, "No space left on device")


def blobs(data_dir: Path) -> list[str]:
    """Every file under the blob folder, temporary ones included."""
    root = data_dir / "blobs"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("writer", [full_disk_safetensors, full_disk_oserror], ids=["SafetensorError", "ENOSPC"])
def test_a_reference_upload_on_a_full_disk_is_a_507_and_leaves_nothing(client, monkeypatch, tmp_path, writer):
    monkeypatch.setattr(model.references, "save_file", writer)
    answer = upload(client, "bottle", image_bytes(), image_bytes(seed=1))
    assert answer.status_code == 507, answer.text
    detail = answer.json()["detail"]
    data_dir = tmp_path / "data"
    assert f"could not store product 'bottle' in the data dir {data_dir / 'blobs'}" in detail
    assert writer.__name__ != "full_disk_safetensors" or "SafetensorError" in detail
    assert blobs(data_dir) == [] and client.app.state.services.store.product_ids() == []
    assert client.get("/products/bottle").status_code == 404


def test_a_replacing_upload_on_a_full_disk_keeps_the_current_version(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes()).status_code == 201
    before = blobs(tmp_path / "data")
    monkeypatch.setattr(Path, "write_bytes", full_disk_write)  # the blob's one write
    answer = upload(client, "bottle", image_bytes(seed=2))
    monkeypatch.undo()
    assert answer.status_code == 507, answer.text
    assert "No space left on device" in answer.json()["detail"]
    assert client.get("/products/bottle").json()["version"] == 1
    assert blobs(tmp_path / "data") == before  # the temporary file went with the failure


def test_calibration_frames_on_a_full_disk_are_a_507_and_store_no_frame(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes(), image_bytes(seed=1)).status_code == 201
    before = blobs(tmp_path / "data")
    product = client.get("/products/bottle").json()
    monkeypatch.setattr(Path, "write_bytes", full_disk_write)
    answer = client.post("/products/bottle/calibration", files=[("images", ("g.png", image_bytes(seed=3)))])
    monkeypatch.undo()
    assert answer.status_code == 507, answer.text
    assert f"in the data dir {tmp_path / 'data' / 'blobs'}" in answer.json()["detail"]
    assert blobs(tmp_path / "data") == before
    assert client.app.state.services.workflows.frames.frames("bottle") == []
    assert client.get("/products/bottle").json()["n_calibration"] == product["n_calibration"]


def test_feedback_on_a_full_disk_is_a_507_and_keeps_the_labels_stored(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes(), image_bytes(seed=1)).status_code == 201
    data = {"label": "defect", "force": "true"}
    first = client.post("/products/bottle/feedback", data=data, files=[("images", ("d.png", image_bytes(seed=4)))])
    assert first.status_code == 200, first.text
    monkeypatch.setattr(Path, "write_bytes", full_disk_write)
    answer = client.post("/products/bottle/feedback", data=data, files=[("images", ("e.png", image_bytes(seed=5)))])
    monkeypatch.undo()
    assert answer.status_code == 507, answer.text
    assert client.get("/products/bottle/evaluation").json()["n_defect"] == 1
