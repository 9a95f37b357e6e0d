"""Defect regions in every result and per-product acceptance rules, through the real app (tiny detector)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model import Prediction
from service.decisions.rules import MAX_COORDINATE, MAX_MM_PER_PIXEL, AcceptanceRules, judge
from service.products.store import rules_of
from tests.helpers.apps import STORE_CALIBRATION, inspect, upload
from tests.helpers.images import image_bytes

GOOD = image_bytes(48, 40, seed=0)
OTHER_GOOD = image_bytes(48, 40, seed=1)
# a distance threshold near the scale's end (2): the score alone rejects nothing, the rules decide
SCORE_NEVER_REJECTS = {"threshold": 1.99, "pixel_threshold": 0.5}


def boxes_map(height: int, width: int, *boxes: tuple[int, int, int, int], value: float = 1.0) -> np.ndarray:
    """A zero anomaly map with value `value` inside each (x0, y0, x1, y1) box (x1, y1 exclusive)."""
    anomaly_map = np.zeros((height, width), dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        anomaly_map[y0:y1, x0:x1] = value
    return anomaly_map


class DrawnMaps:
    """Replaces the detector's maps stage: each frame gets the anomaly map the test drew, at the frame's own size."""

    def __init__(self, worker, *boxes: tuple[int, int, int, int], score: float = 0.0) -> None:
        self.worker, self.boxes, self.score = worker, boxes, score
        self._original = worker.detector.maps

    def __enter__(self) -> DrawnMaps:
        def drawn(batch, scores):
            return [
                Prediction(self.score, boxes_map(f.camera_size[1], f.camera_size[0], *self.boxes), "training-free")
                for f in batch.frames
            ]

        self.worker.detector.maps = drawn
        return self

    def __exit__(self, *exc) -> None:
        self.worker.detector.maps = self._original


# --- the rules themselves ------------------------------------------------------------------------------------


def rules(**fields) -> AcceptanceRules:
    return AcceptanceRules.model_validate(fields)


def test_without_rules_the_threshold_rule_decides_and_regions_are_still_listed():
    anomaly_map = boxes_map(50, 50, (5, 5, 15, 15))
    passed = judge(anomaly_map, 0.5, score_anomalous=False, rules=None, min_area_px=1)
    assert (passed.anomalous, passed.rule, len(passed.regions)) == (False, None, 1)
    flagged = judge(anomaly_map, 0.5, score_anomalous=True, rules=None, min_area_px=1)
    assert (flagged.anomalous, flagged.rule, flagged.rules_fired) == (True, "threshold", ("threshold",))


@pytest.mark.parametrize(
    ("fields", "boxes", "fired"),
    [
        ({"max_regions": 1}, [(0, 0, 4, 4), (10, 10, 14, 14)], ("max_regions",)),
        ({"max_regions": 2}, [(0, 0, 4, 4), (10, 10, 14, 14)], ()),
        ({"max_area_px": 20}, [(0, 0, 5, 5)], ("max_area_px",)),  # 25 px
        ({"max_area_px": 25}, [(0, 0, 5, 5)], ()),  # limits are exclusive maxima
        ({"mm_per_pixel": 0.5, "max_area_mm2": 6.0}, [(0, 0, 5, 5)], ("max_area_mm2",)),  # 6.25 mm²
        ({"mm_per_pixel": 0.5, "max_length_mm": 4.0}, [(0, 0, 10, 2)], ("max_length_mm",)),  # 5 mm long
        ({"mm_per_pixel": 0.5, "max_length_mm": 5.0}, [(0, 0, 10, 2)], ()),
        ({"reject_in": [[[30, 30], [39, 30], [39, 39], [30, 39]]]}, [(0, 0, 5, 5)], ()),
        ({"reject_in": [[[30, 30], [39, 30], [39, 39], [30, 39]]]}, [(25, 25, 31, 31)], ("reject_in",)),
        ({"min_area_px": 1}, [(0, 0, 5, 5)], ("any_region",)),  # rules without limits: any region rejects
        ({"mm_per_pixel": 0.5}, [], ()),
        ({"max_regions": 0, "max_area_px": 1}, [(0, 0, 5, 5)], ("max_regions", "max_area_px")),
    ],
)
def test_each_rule_fires_exactly_when_its_limit_is_exceeded(fields, boxes, fired):
    judgement = judge(boxes_map(40, 40, *boxes), 0.5, score_anomalous=False, rules=rules(**fields), min_area_px=1)
    assert judgement.rules_fired == fired
    assert judgement.anomalous == bool(fired)
    assert judgement.rule == (fired[0] if fired else None)


def test_pixels_inside_ignore_polygons_never_count():
    label_area = [[[0, 0], [19, 0], [19, 19], [0, 19]]]  # covers x, y in 0..19
    anomaly_map = boxes_map(40, 40, (2, 2, 8, 8), (15, 15, 25, 25))
    judgement = judge(anomaly_map, 0.5, False, rules(ignore_in=label_area, max_regions=0), min_area_px=1)
    (region,) = judgement.regions.regions  # the first box is gone, the second keeps only its part outside
    assert region.area_px == 100 - 25
    assert region.bbox == (15, 15, 25, 25)
    assert judgement.rules_fired == ("max_regions",)
    inside_only = judge(boxes_map(40, 40, (2, 2, 8, 8)), 0.5, False, rules(ignore_in=label_area), min_area_px=1)
    assert len(inside_only.regions) == 0 and not inside_only.anomalous


def test_rules_at_their_largest_accepted_values_still_judge_right():
    """The bounds are honest: a polygon at the coordinate limit is drawn right, the largest scale does not overflow."""
    big = MAX_COORDINATE
    lower_right = [[[0, 0], [big, 0], [big, big]]]  # the triangle y <= x over the whole frame
    anomaly_map = boxes_map(40, 40, (30, 2, 34, 6), (2, 30, 6, 34))  # one box above the diagonal, one below
    judgement = judge(anomaly_map, 0.5, False, rules(reject_in=lower_right), min_area_px=1)
    assert sum(judgement.in_reject_zone) == 1
    assert judgement.rules_fired == ("reject_in",)
    huge_scale = rules(mm_per_pixel=MAX_MM_PER_PIXEL, max_area_mm2=1.0)
    assert judge(boxes_map(40, 40, (0, 0, 40, 40)), 0.5, False, huge_scale, 1).rules_fired == ("max_area_mm2",)


def test_the_minimum_area_of_the_rules_overrides_the_setting():
    anomaly_map = boxes_map(30, 30, (0, 0, 3, 3))  # 9 px
    assert len(judge(anomaly_map, 0.5, False, None, min_area_px=16).regions) == 0
    assert len(judge(anomaly_map, 0.5, False, rules(min_area_px=4), min_area_px=16).regions) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_area_mm2": 3.0}, "max_area_mm2"),  # a size in mm needs the product's scale
        ({"max_length_mm": 3.0}, "max_length_mm"),
        ({"max_regions": -1}, "max_regions"),
        ({"mm_per_pixel": 0}, "mm_per_pixel"),
        ({"reject_in": [[[0, 0], [5, 5]]]}, "reject_in"),  # two points are no polygon
        ({"ignore_in": [[[0, 0], [5, "x"], [9, 9]]]}, "ignore_in"),
        ({"max_area_pix": 3}, "max_area_pix"),  # a typo is refused, not ignored
        # numbers so large that the arithmetic overflows (500) or PIL draws the polygon wrong (silently)
        ({"mm_per_pixel": 1e300, "max_area_mm2": 1.0}, "mm_per_pixel"),
        ({"reject_in": [[[0, 0], [1e300, 0], [1e300, 1e300]]]}, "reject_in"),
        ({"ignore_in": [[[0, 0], [-1e10, 0], [0, 5]]]}, "ignore_in"),
        ({"max_regions": 10**23}, "max_regions"),
        ({"min_area_px": 10**23}, "min_area_px"),
    ],
)
def test_bad_rule_files_are_a_422_naming_the_field(client, body, field):
    assert upload(client, "widget", GOOD, OTHER_GOOD).status_code == 201
    answer = client.put("/products/widget/rules", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert client.get("/products/widget/rules").json()["rules"] is None  # nothing half-stored


@pytest.mark.parametrize("body", [{}, {"reject_in": [], "ignore_in": []}, {"max_regions": None, "mm_per_pixel": None}])
def test_rules_that_set_nothing_are_a_422_pointing_to_delete(client, body):
    """Rules that set nothing would reject every part with a region; clearing the rules is DELETE."""
    assert upload(client, "widget", GOOD, OTHER_GOOD).status_code == 201
    assert client.put("/products/widget/rules", json={"max_regions": 3}).status_code == 200
    answer = client.put("/products/widget/rules", json=body)
    assert answer.status_code == 422, answer.text
    assert "DELETE /products/{id}/rules" in answer.text
    assert client.get("/products/widget/rules").json()["rules"] == {"max_regions": 3, "reject_in": [], "ignore_in": []}
    assert client.delete("/products/widget/rules").json()["rules"] is None


def test_stored_rules_that_set_nothing_read_as_no_rules():
    assert rules_of({"reject_in": [], "ignore_in": []}) is None
    assert rules_of({"max_regions": None}) is None
    assert rules_of({"max_regions": 2}).max_regions == 2


def test_rules_of_an_unknown_product_are_a_404(client):
    assert client.put("/products/nope/rules", json={"max_regions": 1}).status_code == 404
    assert client.get("/products/nope/rules").status_code == 404


# --- through the service -------------------------------------------------------------------------------------


def test_every_result_lists_its_regions_with_mm_sizes(client):
    assert upload(client, "widget", GOOD, OTHER_GOOD).status_code == 201
    assert client.put("/products/widget/threshold", json=SCORE_NEVER_REJECTS).status_code == 200
    stored = client.put("/products/widget/rules", json={"mm_per_pixel": 0.1, "max_length_mm": 1.5})
    assert stored.status_code == 200, stored.text
    assert stored.json()["rules_version"] == 1
    worker = client.app.state.services.worker
    with DrawnMaps(worker, (10, 5, 30, 9), (40, 30, 44, 34)):  # 20x4 px and 4x4 px (= 16, the minimum area)
        result = inspect(client, "widget", image_bytes(60, 50)).json()["results"][0]
    assert result["n_regions"] == 2 and not result["regions_truncated"]
    first = result["regions"][0]
    assert first["bbox"] == [10, 5, 30, 9] and first["area_px"] == 80
    assert first["centroid"] == [19.5, 6.5]
    assert first["area_mm2"] == pytest.approx(0.8) and first["length_mm"] == pytest.approx(2.0)
    assert first["width_mm"] == pytest.approx(0.4)
    assert result["anomalous"] and result["rule"] == "max_length_mm"  # 2 mm > 1.5 mm, the score alone would pass
    summary = client.get("/products/widget").json()
    assert summary["mm_per_pixel"] == 0.1 and summary["rules"]["max_length_mm"] == 1.5


def test_regions_past_the_listing_limit_are_cut_with_a_flag(make_client):
    boxes = [(x, 2, x + 4, 6) for x in range(0, 60, 6)]  # ten separate 4x4 regions
    with make_client(max_regions_listed=3, min_region_area_px=1) as client:
        upload(client, "widget", GOOD, OTHER_GOOD)
        assert client.put("/products/widget/threshold", json=SCORE_NEVER_REJECTS).status_code == 200
        client.put("/products/widget/rules", json={"max_regions": 5})
        with DrawnMaps(client.app.state.services.worker, *boxes):
            result = inspect(client, "widget", image_bytes(64, 20)).json()["results"][0]
            png = inspect(client, "widget", image_bytes(64, 20), params={"format": "png"})
    assert (result["n_regions"], len(result["regions"]), result["regions_truncated"]) == (10, 3, True)
    assert result["rule"] == "max_regions"  # the count rule sees every region, not only the listed ones
    assert png.headers["X-Region-Count"] == "10" and png.headers["X-Rule"] == "max_regions"
    metrics = client.get("/metrics").text
    assert 'dcpsfr_rule_hits_total{rule="max_regions"} 2.0' in metrics
    assert "dcpsfr_regions_per_inspection_count 2.0" in metrics


def test_rules_survive_a_restart_and_a_new_upload(make_client):
    body = {"mm_per_pixel": 0.2, "max_regions": 2, "ignore_in": [[[0, 0], [9, 0], [9, 9]]]}
    with make_client() as client:
        upload(client, "widget", GOOD, OTHER_GOOD)
        assert client.put("/products/widget/rules", json=body).status_code == 200
    with make_client() as client:
        shown = client.get("/products/widget/rules").json()
        assert shown["rules"] == {**body, "reject_in": [], "ignore_in": [[[0.0, 0.0], [9.0, 0.0], [9.0, 9.0]]]}
        assert shown["rules_version"] == 1
        assert upload(client, "widget", OTHER_GOOD, GOOD).json()["version"] == 2
        assert client.get("/products/widget/rules").json()["rules"]["max_regions"] == 2
        removed = client.delete("/products/widget/rules").json()
        assert removed["rules"] is None and removed["rules_version"] == 2
    with make_client() as client:
        assert client.get("/products/widget/rules").json()["rules"] is None


def test_a_drawn_rectangle_on_a_real_bottle_frame_gives_its_geometry(client, bottle_dir):
    good = sorted((bottle_dir / "train" / "good").glob("*.png"))[:2]
    frame = sorted((bottle_dir / "test" / "broken_large").glob("*.png"))[0]
    assert upload(client, "bottle", *(p.read_bytes() for p in good)).status_code == 201
    assert client.put("/products/bottle/threshold", json=SCORE_NEVER_REJECTS).status_code == 200
    client.put(
        "/products/bottle/rules",
        json={"mm_per_pixel": 0.05, "reject_in": [[[600, 600], [899, 600], [899, 899], [600, 899]]]},
    )
    with DrawnMaps(client.app.state.services.worker, (300, 400, 420, 460), (700, 800, 760, 850)):
        result = inspect(client, "bottle", frame.read_bytes()).json()["results"][0]
    width, height = Image.open(io.BytesIO(frame.read_bytes())).size
    assert (result["width"], result["height"]) == (width, height) == (900, 900)
    big, small = result["regions"]
    assert big["bbox"] == [300, 400, 420, 460] and big["area_px"] == 120 * 60
    assert big["length_mm"] == pytest.approx(6.0) and big["width_mm"] == pytest.approx(3.0)
    assert big["area_mm2"] == pytest.approx(7200 * 0.05**2)
    assert not big["in_reject_zone"] and small["in_reject_zone"]
    assert result["rule"] == "reject_in" and result["anomalous"]


def test_rules_reach_another_replica_and_outlive_a_new_upload(tmp_path, tiny_detector, refs):
    from tests.helpers.registry import open_registry

    a, b = (open_registry(tmp_path, load_references=tiny_detector.load_references) for _ in range(2))  # 2 replicas
    calibration = STORE_CALIBRATION
    a.commit("p", refs, calibration)
    assert b.get("p").rules is None
    a.set_rules("p", rules(max_regions=2, mm_per_pixel=0.1))
    b.refresh()
    assert (b.get("p").rules.max_regions, b.get("p").rules_version) == (2, 1)
    b.commit("p", refs, calibration)  # a new version of the references on the other replica
    a.refresh()
    assert a.get("p").version == 2 and a.get("p").rules.mm_per_pixel == 0.1
    b.set_rules("p", None)
    a.refresh()
    assert (a.get("p").rules, a.get("p").rules_version) == (None, 2)
