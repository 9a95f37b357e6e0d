"""Valid camera and workstation files are inspected as the camera meant them: an MPO's primary image, PNGs with
large metadata, and 16-bit colour at its real bit depth (the grey rules: sBIT, bit_depth, the references' maximum)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from model import Frame
from model.frame import bit_depth_of
from service.imaging.decode import configure_decoding, decode_image, png_significant_bits
from tests.helpers.apps import inspect, upload
from tests.helpers.images import image_bytes, sample_tiff

LIMIT = 60_000_000
PRIMARY, THUMBNAIL, OTHER_VIEW = (200, 30, 30), (20, 20, 220), (30, 200, 30)


def mpo(*pages: Image.Image) -> bytes:
    """A JPEG with an MPF index: Pillow opens it as an MPO with one page per image."""
    buffer = io.BytesIO()
    pages[0].save(buffer, format="MPO", save_all=True, append_images=list(pages[1:]), quality=95)
    return buffer.getvalue()


def opened_pages(data: bytes) -> tuple[str, int]:
    image = Image.open(io.BytesIO(data))
    return image.format, image.n_frames


@pytest.mark.parametrize(
    "others",
    [
        [Image.new("RGB", (32, 24), THUMBNAIL)],  # an MPF large thumbnail
        [Image.new("RGB", (32, 24), THUMBNAIL), Image.new("RGB", (64, 48), OTHER_VIEW)],  # and a second view
    ],
)
def test_an_mpo_is_inspected_as_its_primary_image(client, others):
    data = mpo(Image.new("RGB", (64, 48), PRIMARY), *others)
    assert opened_pages(data) == ("MPO", 1 + len(others))
    frame = decode_image(data, "camera.jpg", LIMIT)
    assert frame.camera_size == (64, 48)
    assert np.abs(np.asarray(frame.pixels, dtype=int)[24, 32] - PRIMARY).max() <= 3  # the photo, not a thumbnail
    assert upload(client, "camera", image_bytes(64, 48)).status_code == 201
    answer = inspect(client, "camera", data)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["results"][0]["width"], answer.json()["results"][0]["height"]) == (64, 48)
    assert upload(client, "camera-refs", data).status_code == 201


def test_a_large_mpo_is_decoded_reduced_like_a_jpeg():
    data = mpo(Image.new("RGB", (4800, 4200), PRIMARY), Image.new("RGB", (160, 140), THUMBNAIL))
    frame = decode_image(data, "big.jpg", LIMIT)
    assert frame.pixels.size == (2400, 2100) and frame.camera_size == (4800, 4200)


def test_a_multipage_tiff_stays_refused(hard_cases):
    from service.errors import UnsupportedImage

    with pytest.raises(UnsupportedImage, match="3-page TIFF"):
        decode_image((hard_cases / "multipage_3.tif").read_bytes(), "pages.tif", LIMIT)


def png_with_metadata(size: int, kind: str) -> bytes:
    """An 8-bit PNG with `size` bytes of incompressible metadata: an ICC profile (iCCP) or a compressed XMP packet
    (iTXt), as workstation exports write them."""
    payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    image = Image.open(io.BytesIO(image_bytes()))
    buffer = io.BytesIO()
    if kind == "iCCP":
        image.save(buffer, format="PNG", icc_profile=payload)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", payload.hex()[:size], zip=True)
        image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize(("kind", "size"), [("iCCP", 1_500_000), ("iTXt", 2_000_000)])
def test_pngs_with_large_metadata_are_inspected(client, kind, size):
    data = png_with_metadata(size, kind)
    assert upload(client, "export", image_bytes()).status_code == 201
    answer = inspect(client, "export", data)  # the app raised Pillow's metadata limit to the upload limit
    assert answer.status_code == 200, answer.text
    frame = decode_image(data, "export.png", LIMIT)
    assert np.array_equal(np.asarray(frame.pixels), np.asarray(Image.open(io.BytesIO(image_bytes()))))


def test_the_metadata_limit_follows_the_upload_limit_and_keeps_the_pixel_guard():
    configure_decoding(100 * 1024 * 1024)
    assert PngImagePlugin.MAX_TEXT_CHUNK == PngImagePlugin.MAX_TEXT_MEMORY == 100 * 1024 * 1024
    configure_decoding(8 * 1024 * 1024)  # never below Pillow's own limits (1 MiB a chunk, 64 MiB in all)
    assert (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY) == (8 * 1024 * 1024, 64 * 1024 * 1024)
    configure_decoding(64 * 1024 * 1024)  # the default upload limit
    from service.errors import TooLarge

    with pytest.raises(TooLarge, match="more than the limit"):
        decode_image(png_with_metadata(1_500_000, "iCCP"), "export.png", 100)


def colour_png(values: np.ndarray, sbit: int | None = None) -> bytes:
    """(H, W, 3 or 4) uint16 -> a 16-bit RGB(A) PNG, with an sBIT chunk of `sbit` bits per colour when given."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, channels = values.shape
    rows = values.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    colour_type = {2: 4, 3: 2, 4: 6}[channels]
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    sbit_chunk = chunk(b"sBIT", bytes([sbit] * min(channels, 3))) if sbit else b""
    return b"\x89PNG\r\n\x1a\n" + header + sbit_chunk + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def rgb48_with_square(background: int = 2000, square: int = 2200) -> np.ndarray:
    """(40, 48, 3) 12-bit colour data: a flat part with a 10 % brighter square at rows 10..19, columns 12..23."""
    values = np.full((40, 48, 3), background, np.uint16)
    values[:, :, 1] = background // 2
    values[10:20, 12:24] = [square, square // 2, square]
    values[0, 0] = [4095, 2048, 4095]  # the sensor's full scale somewhere: the references' maximum gives 12 bits
    return values


def contrast(frame: Frame, bit_depth: int | None) -> float:
    red = np.asarray(frame.rgb(bit_depth), dtype=np.float64)[:, :, 0]  # (H, W)
    return float(red[12:18, 14:22].mean() - red[25:35, 30:40].mean())


@pytest.mark.parametrize(
    ("data", "sbit"),
    [
        (colour_png(rgb48_with_square()), None),
        (colour_png(rgb48_with_square(), sbit=12), 12),
        (sample_tiff(rgb48_with_square()), None),
    ],
    ids=["png", "png-sbit", "tiff"],
)
def test_16_bit_colour_keeps_its_data_and_is_read_at_its_real_bit_depth(data, sbit):
    frame = decode_image(data, "rgb48", LIMIT)
    assert np.array_equal(frame.pixels, rgb48_with_square()) and frame.significant_bits == sbit
    assert bit_depth_of([frame]) == 12  # sBIT, else the maximum rounded up, as for grey
    assert contrast(frame, 12) == pytest.approx(200 * 255 / 4095, abs=1)  # the 10 % square: ~12 levels, not 1
    assert np.asarray(frame.rgb(12))[0, 0].tolist() == [255, 128, 255]


def test_16_bit_colour_with_alpha_and_16_bit_grey_with_alpha_keep_their_data():
    opaque = np.dstack([rgb48_with_square(), np.full((40, 48), 65535, np.uint16)])
    assert np.array_equal(decode_image(colour_png(opaque), "rgba64.png", LIMIT).pixels, rgb48_with_square())
    empty_alpha = np.dstack([rgb48_with_square(), np.zeros((40, 48), np.uint16)])  # an export artefact
    assert np.array_equal(decode_image(colour_png(empty_alpha), "rgba64.png", LIMIT).pixels, rgb48_with_square())
    grey_alpha = np.dstack([rgb48_with_square()[:, :, 0], np.full((40, 48), 65535, np.uint16)])
    grey = decode_image(colour_png(grey_alpha), "la16.png", LIMIT)
    assert grey.pixels.mode == "I;16" and np.array_equal(np.asarray(grey.pixels), rgb48_with_square()[:, :, 0])


def test_colour_sbit_is_read_from_its_colour_channels():
    assert png_significant_bits(colour_png(rgb48_with_square(), sbit=12)) == 12
    assert png_significant_bits(colour_png(np.dstack([rgb48_with_square()] * 1)[:, :, :1].repeat(2, 2))) is None


def test_16_bit_colour_products_follow_the_grey_rules(client):
    data = colour_png(rgb48_with_square())
    assert upload(client, "rgb48", data).status_code == 201
    assert client.app.state.services.store.get("rgb48").refs.bit_depth == 12  # from the references' maximum
    result = inspect(client, "rgb48", data).json()["results"][0]
    assert (result["width"], result["height"]) == (48, 40) and result["warnings"] == []
    set_at_upload = client.post(
        "/products/rgb48-14/references", data={"bit_depth": "14"}, files=[("images", ("c.png", data))]
    )
    assert set_at_upload.status_code == 201, set_at_upload.text
    assert client.app.state.services.store.get("rgb48-14").refs.bit_depth == 14
    refused = client.post("/products/x/references", data={"bit_depth": "10"}, files=[("images", ("c.png", data))])
    assert refused.status_code == 422 and "values up to 4095 do not fit bit_depth=10" in refused.json()["detail"]
