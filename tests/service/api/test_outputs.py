"""POST /inspect?outputs=verdict: the same verdict, score, regions and rule as the full answer, without the PNGs, and
without the work of making them; the default answer is unchanged. The thumbnail follows DCPSFR_HISTORY_THUMBNAILS."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import service.decisions.results
import service.imaging.encode
from tests.helpers.apps import inspect, upload
from tests.helpers.images import decode_png, image_bytes

GOOD = image_bytes(48, 40, seed=0)
OTHER_GOOD = image_bytes(48, 40, seed=1)
DEFECT = image_bytes(52, 44, seed=2, defect=True)
VERDICT_FIELDS = ("score", "score_scale", "anomalous", "threshold", "pixel_threshold", "width", "height", "mode")
VERDICT_FIELDS += ("regions", "n_regions", "regions_truncated", "rule", "rules_fired", "warnings")


@pytest.fixture
def encoder_calls(monkeypatch) -> Counter:
    """Counts every call of the PNG writers and the thumbnail maker (they still run)."""
    calls: Counter = Counter()

    def spy(module, name):
        original = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    for name in ("mask_png", "heatmap_png", "thumbnail_data_url"):
        spy(service.decisions.results, name)
    spy(service.imaging.encode, "encode_png")
    return calls


def verdict(result: dict) -> dict:
    return {name: result[name] for name in VERDICT_FIELDS}


def test_verdict_only_has_the_full_answers_verdict_and_no_pngs(make_client):
    with make_client(min_region_area_px=1) as client:  # the small defect's regions are listed
        upload(client, "widget", GOOD, OTHER_GOOD)
        full = inspect(client, "widget", GOOD, DEFECT).json()["results"]
        answer = inspect(client, "widget", GOOD, DEFECT, params={"outputs": "verdict"})
    assert answer.status_code == 200, answer.text
    only = answer.json()["results"]
    assert [verdict(r) for r in only] == [verdict(r) for r in full]
    assert [r["anomalous"] for r in only] == [False, True]  # both verdicts, not one twice
    assert only[1]["rule"] == "threshold" and only[1]["n_regions"] >= 1 and only[1]["regions"][0]["area_px"] > 0
    for result in only:
        assert result["mask_png"] is None and result["anomaly_map_png"] is None
        assert {"decode", "queue", "predict", "encode"} <= set(result["timings_ms"])
        assert result["inspection_id"] not in {r["inspection_id"] for r in full}


def test_default_and_full_outputs_carry_both_pngs(client):
    upload(client, "widget", GOOD, OTHER_GOOD)
    default = inspect(client, "widget", DEFECT).json()["results"][0]
    full = inspect(client, "widget", DEFECT, params={"outputs": "full"}).json()["results"][0]
    for result in (default, full):
        mask, heat = decode_png(result["mask_png"]), decode_png(result["anomaly_map_png"])
        assert mask.shape == heat.shape == (44, 52)
        assert set(np.unique(mask)) == {0, 255}
    assert default["mask_png"] == full["mask_png"] and default["anomaly_map_png"] == full["anomaly_map_png"]


def test_verdict_only_encodes_no_png(client, encoder_calls):
    upload(client, "widget", GOOD, OTHER_GOOD)
    encoder_calls.clear()
    assert inspect(client, "widget", GOOD, DEFECT, params={"outputs": "verdict"}).status_code == 200
    assert encoder_calls["mask_png"] == encoder_calls["heatmap_png"] == encoder_calls["encode_png"] == 0
    assert encoder_calls["thumbnail_data_url"] == 2  # the recent inspections show one per frame (the default)
    inspect(client, "widget", GOOD, DEFECT)
    assert encoder_calls["mask_png"] == encoder_calls["heatmap_png"] == 2  # the spies see the full answer's
    assert encoder_calls["encode_png"] == 4


def test_without_history_thumbnails_no_thumbnail_is_made(make_client, encoder_calls):
    with make_client(history_thumbnails=False) as client:
        upload(client, "widget", GOOD, OTHER_GOOD)
        encoder_calls.clear()
        verdict_id = inspect(client, "widget", DEFECT, params={"outputs": "verdict"}).json()["results"][0]
        full = inspect(client, "widget", GOOD).json()["results"][0]
        assert encoder_calls["thumbnail_data_url"] == 0
        assert encoder_calls["encode_png"] == 2  # the full answer's mask and heat map only
        recent = client.get("/products/widget/inspections").json()["inspections"]
    assert [r["inspection_id"] for r in recent] == [full["inspection_id"], verdict_id["inspection_id"]]
    assert [r["thumbnail"] for r in recent] == ["", ""]  # the console shows the file name instead


def test_verdict_only_inspections_keep_their_thumbnail_and_frame_by_default(client):
    upload(client, "widget", GOOD, OTHER_GOOD)
    result = inspect(client, "widget", DEFECT, params={"outputs": "verdict"}).json()["results"][0]
    (recent,) = client.get("/products/widget/inspections").json()["inspections"]
    assert recent["inspection_id"] == result["inspection_id"]
    assert recent["thumbnail"].startswith("data:image/jpeg;base64,")
    feedback = client.post(
        "/products/widget/feedback", data={"label": "defect", "inspection_id": result["inspection_id"]}
    )
    assert feedback.status_code == 200, feedback.text  # the frame was kept for feedback by id


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"format": "png", "outputs": "verdict"}, "outputs=verdict has none"),
        ({"outputs": "maps"}, "outputs"),
        ({"outputs": ""}, "outputs"),
    ],
)
def test_contradictory_or_unknown_outputs_are_422(client, params, expected):
    upload(client, "widget", GOOD)
    answer = inspect(client, "widget", GOOD, params=params)
    assert answer.status_code == 422
    assert expected in answer.text


def test_png_format_still_encodes_only_the_mask(client, encoder_calls):
    upload(client, "widget", GOOD, OTHER_GOOD)
    encoder_calls.clear()
    answer = inspect(client, "widget", DEFECT, params={"format": "png", "outputs": "full"})
    assert decode_png(answer.content).shape == (44, 52)
    assert (encoder_calls["mask_png"], encoder_calls["heatmap_png"]) == (1, 0)


def test_the_schema_documents_outputs_and_null_pngs(client):
    schema = client.get("/openapi.json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/inspect"]["post"]["parameters"]}
    outputs = parameters["outputs"]
    assert outputs["in"] == "query" and not outputs.get("required", False)
    assert outputs["schema"]["enum"] == ["full", "verdict"] and outputs["schema"]["default"] == "full"
    assert "verdict" in outputs["description"]
    image = schema["components"]["schemas"]["InspectedImage"]["properties"]
    for field in ("mask_png", "anomaly_map_png"):
        assert {"type": "null"} in image[field]["anyOf"] and {"type": "string"} in image[field]["anyOf"]
        assert "outputs=verdict" in image[field]["description"]
