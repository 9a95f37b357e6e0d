"""The recent-inspections ring: bounded per product in entries and in kept frame bytes."""

from __future__ import annotations

from PIL import Image

from model import Frame
from service.imaging.encode import thumbnail_data_url
from service.records import history
from service.records.history import Inspection, InspectionHistory


def entry(product_id: str, n: int, frame: bytes | None = b"x") -> Inspection:
    return Inspection(f"id{n}", product_id, 1, "t", 0.1, "distance", 0.5, False, None, 8, 8, "", frame)


def test_ring_is_bounded_newest_first_and_per_product():
    ring = InspectionHistory(size=3)
    for n in range(5):
        ring.record(entry("a", n))
    ring.record(entry("b", 9))
    assert [i.inspection_id for i in ring.recent("a", 10)] == ["id4", "id3", "id2"]
    assert ring.find("a", "id1") is None and ring.find("a", "id3") is not None
    assert ring.find("a", "id9") is None  # another product's id
    ring.set_label("a", "id3", "good")
    assert ring.find("a", "id3").label == "good"
    ring.forget("a")
    assert ring.recent("a", 10) == [] and len(ring.recent("b", 10)) == 1


def test_older_frames_drop_their_bytes_past_the_budget(monkeypatch):
    monkeypatch.setattr(history, "FRAME_BUDGET_BYTES", 25)
    ring = InspectionHistory(size=10)
    for n in range(4):
        ring.record(entry("a", n, frame=b"0123456789"))
    kept = [i.frame is not None for i in ring.recent("a", 10)]
    assert kept == [True, True, False, False]  # the newest two fit in 25 bytes


def test_thumbnail_is_a_small_jpeg_data_url():
    url = thumbnail_data_url(Frame(Image.new("RGB", (640, 320), (10, 200, 30))))
    assert url.startswith("data:image/jpeg;base64,")


def test_thumbnail_of_a_12_bit_frame_is_scaled_by_its_bit_depth_not_white():
    import base64
    import io

    import numpy as np

    mono12 = Image.fromarray(np.full((40, 60), 2048, dtype=np.uint16))  # mid-grey of 4095, as "I;16"
    url = thumbnail_data_url(Frame(mono12), bit_depth=12)
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L"))
    assert abs(float(thumb.mean()) - 2048 / 4095 * 255) < 3  # not 255, as convert("RGB") clipped it
    assert mono12.size == (60, 40)  # the frame itself is left as it was
