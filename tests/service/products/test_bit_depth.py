"""A frame whose bit depth differs from its product's references is read by a documented rule and answered with a
warning in its result (and counted in dcpsfr_frame_warnings_total{kind="bit-depth"}), never silently crushed."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from model import Frame
from tests.helpers.apps import inspect, upload
from tests.helpers.images import encoded


def mono12(hard_cases) -> np.ndarray:
    """(192, 256) Mono12 data in 16-bit words (745..2256 of 0..4095), with a +200 DN square."""
    return np.asarray(Image.open(hard_cases / "mono12_in_16bit.png"), dtype=np.uint16)


def as_8_bit(values: np.ndarray, bits: int = 12) -> np.ndarray:
    return np.rint(values.astype(np.float64) * 255 / (2**bits - 1)).astype(np.uint8)


def png(values: np.ndarray) -> bytes:
    return encoded(Image.fromarray(values))


def mismatches(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('dcpsfr_frame_warnings_total{kind="bit-depth"} '):
            return float(line.split()[1])
    raise AssertionError('dcpsfr_frame_warnings_total{kind="bit-depth"} is not exported')


def test_16_bit_frames_of_a_product_fitted_on_8_bit_references_are_read_at_their_own_depth(client, hard_cases):
    scene = mono12(hard_cases)
    assert upload(client, "mono", png(as_8_bit(scene))).status_code == 201  # fitted on the Mono8 stream
    assert client.app.state.services.store.get("mono").refs.bit_depth is None
    eight, sixteen = inspect(client, "mono", png(as_8_bit(scene)), png(scene)).json()["results"]
    assert eight["warnings"] == [] and not eight["anomalous"]
    assert not sixteen["anomalous"] and sixteen["score"] < eight["threshold"]  # not a near-black frame
    assert sixteen["warnings"] == [
        "bit depth: a 12-bit frame (from its maximum value), but the product's references are 8-bit data: it is "
        "read at 12 bits (0..4095); if the camera's pixel format changed, upload references in the new one"
    ]
    assert mismatches(client) == 1
    read = np.asarray(Frame(Image.fromarray(scene)).rgb(None))[:, :, 0]  # the rule: the frame's own depth
    assert np.abs(read.astype(int) - as_8_bit(scene)).max() <= 1


def test_frames_of_another_depth_than_a_high_bit_product_are_warned_about(client, hard_cases):
    scene = mono12(hard_cases)
    assert upload(client, "mono12", png(scene)).status_code == 201
    assert client.app.state.services.store.get("mono12").refs.bit_depth == 12
    same, eight, fourteen = inspect(client, "mono12", png(scene), png(as_8_bit(scene)), png(scene * 4)).json()[
        "results"
    ]
    assert same["warnings"] == []
    assert eight["warnings"][0].startswith("bit depth: an 8-bit frame, but the product's references are 12-bit")
    assert fourteen["warnings"] == [
        "bit depth: a frame has values up to 9024, above its product's bit depth of 12 bits (0..4095): they are "
        "clipped white; refit the references with a larger bit_depth"
    ]
    assert mismatches(client) == 2


def test_a_frame_with_its_own_sbit_is_read_at_it_and_warned_about_when_it_differs():
    values = np.array([[0, 512, 1023]], dtype=np.uint16)
    frame = Frame(Image.fromarray(values), significant_bits=10)
    assert np.asarray(frame.rgb(12))[0, :, 0].tolist() == [0, 128, 255]
    assert frame.bit_depth_warning(12).startswith("bit depth: a 10-bit frame (from its sBIT), but the product's")
    assert frame.bit_depth_warning(10) is None
    colour = Frame(np.dstack([values] * 3))  # 16-bit colour follows the same rules
    assert colour.bits(None) == 10 and colour.bit_depth_warning(None).startswith("bit depth: a 10-bit frame")
    assert Frame(Image.open(io.BytesIO(png(as_8_bit(values))))).bit_depth_warning(None) is None
