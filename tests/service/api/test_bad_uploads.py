"""Undecodable uploads: whatever Pillow raises and wherever (header, pixel data), the answer is a 400 JSON."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from service.errors import BadImage
from service.imaging.decode import decode_image
from tests.helpers.apps import inspect, upload
from tests.helpers.images import image_bytes
from tests.helpers.processes import running_service

LIMIT = 10_000_000


def bmp_cut_in_header() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 150)).save(buffer, format="BMP")
    return buffer.getvalue()[:30]  # 14-byte file header + half of the 40-byte info header


def broken_payloads(hard_cases) -> dict[str, bytes]:
    png = image_bytes(64, 64)
    jpeg = image_bytes(64, 64, fmt="JPEG")
    return {
        "cut_header.jpg": (hard_cases / "cut_header.jpg").read_bytes(),  # JPEG cut after 300 bytes
        "cut_header.png": (hard_cases / "cut_header.png").read_bytes(),  # PNG cut after 20 bytes
        "cut_header.bmp": bmp_cut_in_header(),
        "empty.png": b"",
        "bmp_magic_only.bmp": b"BM",
        "png_cut_in_pixels.png": png[: len(png) // 2],
        "jpeg_cut_in_pixels.jpg": jpeg[: len(jpeg) * 2 // 3],
        "tiff_cut.tif": image_bytes(64, 64, fmt="TIFF")[:200],
    }


def test_truncated_images_are_never_loaded_padded():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # a cut file must fail, not decode as a grey-padded frame


def test_every_kind_of_broken_file_is_a_bad_image(hard_cases):
    for name, data in broken_payloads(hard_cases).items():
        with pytest.raises(BadImage, match="does not decode"):
            decode_image(data, name, LIMIT)


def test_broken_files_are_400_json_as_references_and_as_frames(client, hard_cases):
    assert upload(client, "part", image_bytes(), image_bytes(seed=1)).status_code == 201
    for name, data in broken_payloads(hard_cases).items():
        as_reference = upload(client, "other", data)
        as_frame = inspect(client, "part", image_bytes(), data)
        for answer in (as_reference, as_frame):
            assert answer.status_code == 400, (name, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert "does not decode" in answer.json()["detail"], name
    assert client.get("/products/other").status_code == 404  # nothing was stored for the refused uploads
    assert inspect(client, "part", image_bytes()).status_code == 200


@pytest.mark.e2e
def test_a_broken_upload_leaves_the_keep_alive_connection_usable(tmp_path, hard_cases):
    good = [("images", ("good.png", image_bytes(), "image/png"))]
    with running_service(tmp_path, DCPSFR_DATA_DIR=str(tmp_path / "data")) as service:
        client = service.client
        log = service.log
        assert client.post("/products/part/references", files=good).status_code == 201
        first = client.get("/healthz")
        address = first.extensions["network_stream"].get_extra_info("client_addr")
        for name in ("cut_header.jpg", "cut_header.png"):
            broken = [("images", (name, (hard_cases / name).read_bytes(), "application/octet-stream"))]
            as_reference = client.post("/products/part/references", files=broken)
            as_frame = client.post("/inspect", data={"product_id": "part"}, files=broken)
            assert [as_reference.status_code, as_frame.status_code] == [400, 400]
            assert as_frame.headers.get("connection", "keep-alive") != "close"
        after = client.post("/inspect", data={"product_id": "part"}, files=good)
        assert after.status_code == 200, after.text
        assert after.extensions["network_stream"].get_extra_info("client_addr") == address  # the same TCP connection
        assert client.get("/products/part").json()["version"] == 1  # the broken reference upload changed nothing
    assert "Traceback" not in log.read_text()
