"""Prometheus exposition: the metric names the dashboards use, bounded labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.apps import inspect, upload
from tests.helpers.images import image_bytes

GOOD = image_bytes(48, 40, seed=0)
DEFECT = image_bytes(48, 40, seed=2, defect=True)


def samples(client) -> dict[str, list]:
    text = client.get("/metrics").text
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found, name: str, **labels) -> float:
    return sum(s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_after_an_upload_and_inspections(client):
    upload(client, "widget", GOOD)
    inspect(client, "widget", GOOD, DEFECT)
    inspect(client, "nobody", GOOD)
    client.put("/products/widget/threshold", json={"threshold": -1.0})
    inspect(client, "widget", GOOD)
    found = samples(client)

    duration = "dcpsfr_http_request_duration_seconds_count"
    assert value(found, duration, route="/products/{product_id}/references", method="POST", status="201") == 1
    assert value(found, duration, route="/inspect", method="POST", status="200") == 2
    assert value(found, duration, route="/inspect", method="POST", status="404") == 1
    assert not [s for s in found[duration] if "widget" in s.labels["route"]]  # templates, never raw paths

    for stage in ("decode", "predict", "encode", "fit"):
        assert value(found, "dcpsfr_stage_duration_seconds_count", stage=stage) >= 1
    assert value(found, "dcpsfr_batch_size_sum") >= 3  # warm-up is not counted; 2 + 1 inspected images at least
    assert value(found, "dcpsfr_inspections_total") == 3
    assert value(found, "dcpsfr_inspections_total", verdict="anomalous") >= 1  # threshold -1: always anomalous
    assert not any("product" in s.labels for s in found["dcpsfr_inspections_total"])
    assert value(found, "dcpsfr_products") == 1
    assert value(found, "dcpsfr_queue_depth") == 0
    assert value(found, "dcpsfr_gpu_memory_allocated_bytes") == 0  # CPU
    info = found["dcpsfr_model_info"][0]
    assert info.value == 1
    assert info.labels == {"config": "tiny", "mode": "training-free (random weights)", "device": "cpu"}


def test_product_labels_only_when_enabled(make_client):
    with make_client(metrics_per_product=True) as client:
        upload(client, "widget", GOOD)
        inspect(client, "widget", GOOD)
        found = samples(client)
    assert value(found, "dcpsfr_inspections_total", product="widget") == 1


def test_relative_scores_and_bounded_product_labels(make_client):
    with make_client(metrics_per_product=True, metrics_max_products=2) as client:
        for product in ("a", "b", "c", "d"):
            upload(client, product, GOOD)
            inspect(client, product, GOOD)
        product = client.get("/products/a").json()
        found = samples(client)
    products = {s.labels["product"] for s in found["dcpsfr_inspections_total"]}
    assert products == {"a", "b", "other"}  # bounded: the first two by name, then "other"
    assert value(found, "dcpsfr_inspections_total", product="other") == 2
    assert value(found, "dcpsfr_inspection_relative_score_count", product="other") == 2
    assert value(found, "dcpsfr_last_inspection_timestamp_seconds", product="a") > 0
    # GOOD is the reference itself: below its threshold, i.e. under 1 on the relative scale
    assert value(found, "dcpsfr_inspection_relative_score_bucket", product="a", le="1.0") == 1
    assert product["calibration"]["normal_median"] < product["threshold"]


def test_relative_scores_without_product_labels(client):
    upload(client, "widget", GOOD)
    inspect(client, "widget", GOOD, DEFECT)
    found = samples(client)
    assert value(found, "dcpsfr_inspection_relative_score_count") == 2
    assert not any("product" in s.labels for s in found["dcpsfr_inspection_relative_score_count"])


def test_frames_of_another_aspect_are_counted_as_warnings(client):
    upload(client, "widget", GOOD)  # 48 x 40
    found = samples(client)
    assert value(found, "dcpsfr_frame_warnings_total", kind="aspect") == 0  # labelled from the start
    assert value(found, "dcpsfr_frame_warnings_total", kind="bit-depth") == 0
    inspect(client, "widget", GOOD, image_bytes(80, 40, seed=3), image_bytes(40, 48, seed=4))
    inspect(client, "widget", image_bytes(96, 80, seed=5))  # the references' aspect at twice the size
    assert value(samples(client), "dcpsfr_frame_warnings_total", kind="aspect") == 2
