"""Camera frames through decode and the API: EXIF orientation, multi-page TIFF, 16-bit data, large frames."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from service.errors import BadImage, UnsupportedImage
from service.imaging.decode import decode_image
from tests.helpers.apps import inspect, upload
from tests.helpers.images import decode_png, image_bytes, sample_tiff

LIMIT = 60_000_000


def test_exif_orientation_is_applied(client, hard_cases):
    data = (hard_cases / "exif_orientation6.jpg").read_bytes()  # stored 300 x 200, shown 200 x 300
    assert decode_image(data, "phone.jpg", LIMIT).camera_size == (200, 300)
    assert upload(client, "phone", data).status_code == 201
    result = inspect(client, "phone", data).json()["results"][0]
    assert (result["width"], result["height"]) == (200, 300)
    assert decode_png(result["mask_png"]).shape == (300, 200)


def test_multipage_tiff_is_refused_as_frame_and_as_reference(client, hard_cases):
    data = (hard_cases / "multipage_3.tif").read_bytes()
    with pytest.raises(UnsupportedImage, match="3-page TIFF"):
        decode_image(data, "pages.tif", LIMIT)
    assert upload(client, "part", image_bytes()).status_code == 201
    for answer in (upload(client, "pages", data), inspect(client, "part", data)):
        assert answer.status_code == 415 and "3-page" in answer.json()["detail"]


def test_16_bit_frames_keep_their_data_for_the_product_bit_depth(client, hard_cases):
    data = (hard_cases / "mono12_in_16bit.png").read_bytes()
    decoded = decode_image(data, "mono12.png", LIMIT)
    assert (
        decoded.pixels.mode == "I;16"
        and np.asarray(decoded.pixels).max() == np.asarray(Image.open(io.BytesIO(data))).max()
    )
    created = upload(client, "mono", data)
    assert created.status_code == 201, created.text
    result = inspect(client, "mono", data).json()["results"][0]
    assert (result["width"], result["height"]) == (256, 192)


def test_a_large_jpeg_is_decoded_reduced_and_keeps_its_size():
    buffer = io.BytesIO()
    Image.new("RGB", (4800, 4200), (120, 130, 140)).save(buffer, format="JPEG", quality=80)
    decoded = decode_image(buffer.getvalue(), "big.jpg", LIMIT)
    assert decoded.pixels.size == (2400, 2100)  # DCT scaling 1/2: the shorter side stays >= 2048
    assert decoded.camera_size == (4800, 4200)


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
    """A 32-bit integer TIFF (mode I) is read as 16-bit data when it fits, and refused beyond: clipping at 65535
    would turn frames with larger values white."""
    ramp = np.tile(np.linspace(0, 4095, 48), (40, 1))  # (40, 48) 12-bit data in 32-bit words
    decoded = decode_image(int32_tiff(ramp), "mono12.tif", LIMIT)
    assert decoded.pixels.mode == "I;16" and np.array_equal(np.asarray(decoded.pixels), ramp.astype(np.uint16))
    assert upload(client, "mono32", int32_tiff(ramp)).status_code == 201
    assert inspect(client, "mono32", int32_tiff(ramp)).status_code == 200
    for beyond in (ramp * 64, ramp - 100):  # up to 262080; below zero
        with pytest.raises(UnsupportedImage, match="32-bit integer pixels from"):
            decode_image(int32_tiff(beyond), "hdr.tif", LIMIT)
        answer = inspect(client, "mono32", int32_tiff(beyond))
        assert answer.status_code == 415 and "convert the frame to 16 bits" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("pixels", "detail"),
    [
        (np.array([[70000, 70999]], np.int32), "signed 32-bit integer pixels from 70000 to 70999"),  # not "from 0"
        (np.array([[-5, 300]], np.int16), "signed 16-bit integer pixels from -5 to 300"),  # Pillow: mode I
        (np.array([[7, 3_000_000_000]], np.uint32), "unsigned 32-bit integer pixels from 7 to 3000000000"),  # wrapped
    ],
)
def test_integer_tiffs_beyond_16_bits_name_their_sample_format_and_real_range(client, pixels, detail):
    with pytest.raises(UnsupportedImage, match=detail):
        decode_image(sample_tiff(pixels), "wide.tif", LIMIT)
    assert upload(client, "part", image_bytes()).status_code == 201
    answer = inspect(client, "part", sample_tiff(pixels))
    assert answer.status_code == 415 and detail in answer.json()["detail"]


@pytest.mark.parametrize("dtype", [np.int16, np.uint32])
def test_integer_tiffs_within_0_65535_are_taken_as_16_bit_data(dtype):
    ramp = np.tile(np.linspace(0, 4095, 48), (40, 1)).astype(dtype)  # (40, 48) 12-bit data
    decoded = decode_image(sample_tiff(ramp), "mono12.tif", LIMIT)
    assert decoded.pixels.mode == "I;16" and np.array_equal(np.asarray(decoded.pixels), ramp.astype(np.uint16))


def float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32)).save(buffer, format="TIFF")  # mode F
    return buffer.getvalue()


def test_float_frames_within_0_1_or_0_255_are_read_and_others_refused_not_clipped(client):
    ramp = np.tile(np.linspace(0, 1, 48), (40, 1))  # (40, 48)
    unit = np.asarray(decode_image(float_tiff(ramp), "unit.tif", LIMIT).pixels)
    assert unit.shape == (40, 48, 3) and unit[0, [0, -1], 0].tolist() == [0, 255]
    assert np.array_equal(np.asarray(decode_image(float_tiff(ramp * 255), "byte.tif", LIMIT).pixels), unit)
    assert upload(client, "float", float_tiff(ramp * 255)).status_code == 201
    nan = ramp.copy()
    nan[0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN made numpy warn in a cast and scored like black
        for values, detail in (
            (ramp * 4095, "float pixels from 0 to 4095"),  # was a 200, white above 255
            (ramp - 0.5, "float pixels from -0.5 to 0.5"),
            (nan, "float pixels include NaN or infinity"),
        ):
            with pytest.raises(UnsupportedImage, match=detail):
                decode_image(float_tiff(values), "hdr.tif", LIMIT)
            answer = inspect(client, "float", float_tiff(values))
            assert answer.status_code == 415 and "convert the image to 8- or 16-bit integers" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("pixels", "samples"),
    [(np.zeros((40, 48, 3), np.float32), "32-bit float, 3 samples per pixel"), (np.zeros((40, 48)), "64-bit float")],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns as it reads the cut directory
def test_a_valid_tiff_pillow_cannot_read_is_unsupported_not_cut(client, pixels, samples):
    data = sample_tiff(pixels)
    detail = f"this TIFF's sample format ({samples}) is not supported; convert it to 8- or 16-bit integers"
    with pytest.raises(UnsupportedImage, match=re.escape(detail)):
        decode_image(data, "float.tif", LIMIT)
    assert upload(client, "part", image_bytes()).status_code == 201
    answer = inspect(client, "part", data)
    assert answer.status_code == 415 and detail in answer.json()["detail"]
    with pytest.raises(BadImage, match="the header is cut or damaged"):
        decode_image(data[:60], "cut.tif", LIMIT)  # cut inside its directory


def sixteen_bit_png(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, format="PNG")  # no sBIT
    return buffer.getvalue()


def test_a_bit_depth_given_at_upload_below_the_references_data_is_refused(client):
    """The references' data would be clipped white at the given bit depth (silently, before)."""
    mono12 = sixteen_bit_png(np.tile(np.linspace(0, 4095, 48), (40, 1)))  # (40, 48) up to 4095, no sBIT
    refused = client.post("/products/mono/references", data={"bit_depth": "10"}, files=[("images", ("m.png", mono12))])
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "images[0] (m.png): values up to 4095 do not fit bit_depth=10 (0..1023); send bit_depth=12 or more, or "
        "leave it out to take it from the references"
    )
    assert client.get("/products/mono").status_code == 404
    taken = client.post("/products/mono/references", data={"bit_depth": "12"}, files=[("images", ("m.png", mono12))])
    assert taken.status_code == 201, taken.text
