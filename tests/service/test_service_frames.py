"""Camera frames through decode and the API: EXIF orientation, multi-page TIFF, 16-bit data, large frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.preprocess import FRAME_SIZE_KEY, frame_size
from service.errors import UnsupportedMedia
from service.images import decode_image
from tests.service.conftest import decode_png, image_bytes, inspect, upload

LIMIT = 60_000_000


def test_exif_orientation_is_applied(client, hard_cases):
    data = (hard_cases / "exif_orientation6.jpg").read_bytes()  # stored 300 x 200, shown 200 x 300
    assert decode_image(data, "phone.jpg", LIMIT).size == (200, 300)
    assert upload(client, "phone", data).status_code == 201
    result = inspect(client, "phone", data).json()["results"][0]
    assert (result["width"], result["height"]) == (200, 300)
    assert decode_png(result["mask_png"]).shape == (300, 200)


def test_multipage_tiff_is_refused_as_frame_and_as_reference(client, hard_cases):
    data = (hard_cases / "multipage_3.tif").read_bytes()
    with pytest.raises(UnsupportedMedia, match="3-page TIFF"):
        decode_image(data, "pages.tif", LIMIT)
    assert upload(client, "part", image_bytes()).status_code == 201
    for answer in (upload(client, "pages", data), inspect(client, "part", data)):
        assert answer.status_code == 415 and "3-page" in answer.json()["detail"]


def test_16_bit_frames_keep_their_data_for_the_product_bit_depth(client, hard_cases):
    data = (hard_cases / "mono12_in_16bit.png").read_bytes()
    decoded = decode_image(data, "mono12.png", LIMIT)
    assert decoded.mode == "I;16" and np.asarray(decoded).max() == np.asarray(Image.open(io.BytesIO(data))).max()
    created = upload(client, "mono", data)
    assert created.status_code == 201, created.text
    result = inspect(client, "mono", data).json()["results"][0]
    assert (result["width"], result["height"]) == (256, 192)


def test_a_large_jpeg_is_decoded_reduced_and_keeps_its_size():
    buffer = io.BytesIO()
    Image.new("RGB", (4800, 4200), (120, 130, 140)).save(buffer, format="JPEG", quality=80)
    decoded = decode_image(buffer.getvalue(), "big.jpg", LIMIT)
    assert decoded.size == (2400, 2100)  # DCT scaling 1/2: the shorter side stays >= 2048
    assert frame_size(decoded) == (4800, 4200) and decoded.info[FRAME_SIZE_KEY] == (4800, 4200)


def test_the_product_bit_depth_can_be_set_at_upload(client, hard_cases):
    data = (hard_cases / "mono12_in_16bit.png").read_bytes()
    for bits in ("12", "16"):
        created = client.post(
            f"/products/mono{bits}/references", data={"bit_depth": bits}, files=[("images", ("m.png", data))]
        )
        assert created.status_code == 201, created.text
        assert client.app.state.services.store.get(f"mono{bits}").refs.bit_depth == int(bits)
        assert inspect(client, f"mono{bits}", data).status_code == 200
    bad = client.post("/products/x/references", data={"bit_depth": "40"}, files=[("images", ("m.png", data))])
    assert bad.status_code == 422


def int32_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.int32), mode="I").save(buffer, format="TIFF")
    return buffer.getvalue()


def test_32_bit_integer_frames_are_taken_as_16_bit_when_they_fit_and_refused_when_not(client):
    """A 32-bit integer TIFF (mode I) used to be clipped at 65535, so frames with larger values came out white."""
    ramp = np.tile(np.linspace(0, 4095, 48), (40, 1))  # (40, 48) 12-bit data in 32-bit words
    decoded = decode_image(int32_tiff(ramp), "mono12.tif", LIMIT)
    assert decoded.mode == "I;16" and np.array_equal(np.asarray(decoded), ramp.astype(np.uint16))
    assert upload(client, "mono32", int32_tiff(ramp)).status_code == 201
    assert inspect(client, "mono32", int32_tiff(ramp)).status_code == 200
    for beyond in (ramp * 64, ramp - 100):  # up to 262080; below zero
        with pytest.raises(UnsupportedMedia, match="32-bit integer pixels from"):
            decode_image(int32_tiff(beyond), "hdr.tif", LIMIT)
        answer = inspect(client, "mono32", int32_tiff(beyond))
        assert answer.status_code == 415 and "convert the frame to 16 bits" in answer.json()["detail"]
