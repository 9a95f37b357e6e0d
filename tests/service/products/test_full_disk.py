"""A full (or failing) data disk: every storage error on the write path is a 507 naming the data dir, whatever
library raised it, and nothing is left behind (no `.tmp-*` folder, no half version, no stray file)."""

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


def debris(data_dir: Path) -> list[str]:
    """Every path under the products folder that is not a committed product's file."""
    root = data_dir / "products"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith("."))


@pytest.mark.parametrize("writer", [full_disk_safetensors, full_disk_oserror], ids=["SafetensorError", "ENOSPC"])
def test_a_reference_upload_on_a_full_disk_is_a_507_and_leaves_nothing(client, monkeypatch, tmp_path, writer):
    monkeypatch.setattr(model.references, "save_file", writer)
    answer = upload(client, "bottle", image_bytes(), image_bytes(seed=1))
    assert answer.status_code == 507, answer.text
    detail = answer.json()["detail"]
    data_dir = tmp_path / "data"
    assert f"could not store product 'bottle' in the data dir {data_dir / 'products'}" in detail
    assert writer.__name__ != "full_disk_safetensors" or "SafetensorError" in detail
    assert debris(data_dir) == [] and not (data_dir / "products" / "bottle").exists()
    assert client.get("/products/bottle").status_code == 404


def test_a_replacing_upload_on_a_full_disk_keeps_the_current_version(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes()).status_code == 201
    monkeypatch.setattr(model.references, "save_file", full_disk_safetensors)
    assert upload(client, "bottle", image_bytes(seed=2)).status_code == 507
    product = client.get("/products/bottle").json()
    assert product["version"] == 1
    assert debris(tmp_path / "data") == []
    assert sorted(p.name for p in (tmp_path / "data" / "products" / "bottle").iterdir()) == ["current.json", "v1"]


def test_a_threshold_write_on_a_full_disk_is_a_507_and_leaves_no_temporary_file(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes()).status_code == 201

    def full_disk(path: Path, data: bytes) -> None:
        path.touch()  # the temporary file exists when the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)  # write_atomic's one write
    answer = client.put("/products/bottle/threshold", json={"threshold": 0.25})
    assert answer.status_code == 507, answer.text
    assert f"in the data dir {tmp_path / 'data' / 'products'}" in answer.json()["detail"]
    assert "No space left on device" in answer.json()["detail"]
    monkeypatch.undo()
    assert debris(tmp_path / "data") == []
    assert client.get("/products/bottle").json()["threshold"] != 0.25


def test_calibration_frames_on_a_full_disk_leave_no_frame_files(client, monkeypatch, tmp_path):
    assert upload(client, "bottle", image_bytes(), image_bytes(seed=1)).status_code == 201
    frames = tmp_path / "data" / "products" / "bottle"
    before = sorted(p.name for p in frames.rglob("*"))
    written = []

    def index_fails(path, content):
        written.extend(frames.rglob("*.img"))
        raise OSError(errno.ENOSPC, "No space left on device")

    import service.products.frames

    monkeypatch.setattr(service.products.frames, "write_json_atomic", index_fails)
    answer = client.post("/products/bottle/calibration", files=[("images", ("g.png", image_bytes(seed=3)))])
    assert answer.status_code == 507, answer.text
    assert written, "the frame file was written before the index failed"
    monkeypatch.undo()
    assert sorted(p.name for p in frames.rglob("*")) == before and debris(tmp_path / "data") == []
