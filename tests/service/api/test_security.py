"""API keys, request limits, and bad requests: always a 4xx with a JSON message, never harm to stored state."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.helpers.apps import files, inspect, upload
from tests.helpers.images import image_bytes, png_header_only

GOOD = image_bytes(48, 40, seed=0)
KEYS = "first-key,second-key"


def test_without_keys_configured_everything_is_open(client):
    assert client.get("/products").status_code == 200


def test_api_keys_guard_every_route_but_health(make_client):
    with make_client(api_keys=KEYS) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        missing = client.get("/products")
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert "API key" in missing.json()["detail"]
        assert client.get("/metrics").status_code == 401
        assert client.get("/no-such-route").status_code == 401
        wrong = client.get("/products", headers={"X-API-Key": "wrong"})
        assert (
            wrong.status_code == 403
            and "not one of the service's keys (DCPSFR_KEYS_FILE, DCPSFR_API_KEYS)" in wrong.json()["detail"]
        )
        assert client.get("/products", headers={"Authorization": "Bearer\tsecond-key"}).status_code == 200
        assert client.get("/products", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.get("/products", headers={"Authorization": "Bearer second-key"}).status_code == 200
        assert client.get("/products", headers={"X-API-Key": "first-key"}).status_code == 200
        assert upload(client, "widget", GOOD).status_code == 401
        assert upload(client, "widget", GOOD, headers={"X-API-Key": "first-key"}).status_code == 201


@pytest.mark.parametrize(
    ("bearer", "api_key", "status", "detail"),
    [
        ("first-key", "wrong", 401, "the X-API-Key header carries a wrong key"),
        ("wrong", "first-key", 401, "the Authorization header carries a wrong key"),
        ("first-key", "second-key", 401, "the X-API-Key header carries a wrong key"),  # two valid keys still differ
        ("wrong", "other", 401, "neither carries a valid key"),
        ("second-key", "second-key", 200, None),  # the same key in both is fine
    ],
)
def test_a_bearer_key_and_an_x_api_key_must_agree(make_client, bearer, api_key, status, detail):
    with make_client(api_keys=KEYS) as client:
        answer = client.get("/products", headers={"Authorization": f"Bearer {bearer}", "X-API-Key": api_key})
        assert answer.status_code == status, answer.text
        if detail is not None:
            assert detail in answer.json()["detail"] and answer.headers["WWW-Authenticate"] == "Bearer"
            assert "-key" not in answer.json()["detail"]  # no credential comes back


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Basic Zmlyc3Qta2V5Og==", "unsupported Authorization scheme 'Basic'"),
        ("Token first-key", "unsupported Authorization scheme 'Token'"),
        ("Bearer ", "empty Bearer credential"),
        ("Bearer", "empty Bearer credential"),
        ("Token\tfirst-key", "unsupported Authorization scheme 'Token'"),
        ("first-key", "an Authorization header needs a scheme"),  # a key without a scheme: never echoed
        ("wrong-key", "an Authorization header needs a scheme"),
    ],
)
def test_unusable_authorization_header_is_named(make_client, authorization, detail):
    with make_client(api_keys=KEYS) as client:
        answer = client.get("/products", headers={"Authorization": authorization})
        assert answer.status_code == 401
        assert answer.json()["detail"].startswith(detail)
        assert "Authorization: Bearer <key>" in answer.json()["detail"]
        assert "-key" not in answer.json()["detail"]  # no credential comes back


def test_request_body_limit(make_client):
    with make_client(max_upload_bytes=4096) as client:
        big = image_bytes(200, 200)
        assert len(big) > 4096
        answer = upload(client, "widget", big)
        assert answer.status_code == 413
        assert "DCPSFR_MAX_UPLOAD_BYTES" in answer.json()["detail"]
        assert client.get("/products/widget").status_code == 404


def test_request_body_limit_without_content_length(make_client):
    with make_client(max_upload_bytes=4096) as client:
        body = b"--xx\r\nContent-Disposition: form-data; name=images; filename=a.png\r\n\r\n" + b"\0" * 20000
        chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))
        answer = client.post(
            "/products/widget/references",
            content=chunks,
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
        )
        assert answer.status_code == 413
        assert "DCPSFR_MAX_UPLOAD_BYTES" in answer.json()["detail"]


def test_pixel_limit_refuses_bombs_before_decoding(make_client):
    with make_client(max_pixels=100_000) as client:
        upload(client, "widget", GOOD)
        answer = inspect(client, "widget", png_header_only(2000, 2000))
        assert answer.status_code == 413
        assert "2000 x 2000" in answer.json()["detail"]


def test_images_per_request_limits(make_client):
    with make_client(max_images_per_request=2, max_references=3) as client:
        assert upload(client, "widget", *[GOOD] * 4).status_code == 413
        assert upload(client, "widget", *[GOOD] * 3).status_code == 201
        too_many = inspect(client, "widget", *[GOOD] * 3)
        assert too_many.status_code == 413
        assert "DCPSFR_MAX_IMAGES_PER_REQUEST" in too_many.json()["detail"]


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


BAD_INSPECTIONS = [
    ("unknown product", {"product_id": "nobody"}, files(GOOD), 404),
    ("invalid product id", {"product_id": "../etc"}, files(GOOD), 422),
    ("no product id", {}, files(GOOD), 422),
    ("no images", {"product_id": "widget"}, None, 422),
    ("text instead of image", {"product_id": "widget"}, files(b"hello, world"), 415),
    ("gif", {"product_id": "widget"}, files(gif()), 415),
    ("truncated png", {"product_id": "widget"}, files(GOOD[:200]), 400),
    ("empty file", {"product_id": "widget"}, files(b""), 400),
    ("one good one broken", {"product_id": "widget"}, files(GOOD, GOOD[:200]), 400),
]


@pytest.mark.parametrize(
    ("case", "data", "upload_files", "status"), BAD_INSPECTIONS, ids=[c[0] for c in BAD_INSPECTIONS]
)
def test_bad_inspections_get_a_clear_4xx_and_harm_nothing(client, case, data, upload_files, status):
    upload(client, "widget", GOOD)
    before = inspect(client, "widget", GOOD).json()["results"][0]["score"]
    answer = client.post("/inspect", data=data, files=upload_files)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 5
    after = inspect(client, "widget", GOOD).json()
    assert after["reference_version"] == 1
    assert after["results"][0]["score"] == pytest.approx(before, rel=1e-5)


@pytest.mark.parametrize(
    ("payloads", "status"),
    [([b"not an image"], 415), ([GOOD, GOOD[:100]], 400), ([], 422)],
    ids=["not an image", "one broken", "none"],
)
def test_bad_reference_uploads_keep_the_current_version(client, payloads, status):
    upload(client, "widget", GOOD)
    answer = upload(client, "widget", *payloads) if payloads else client.post("/products/widget/references")
    assert answer.status_code == status
    assert client.get("/products/widget").json()["version"] == 1


def test_bad_product_ids_in_paths(client):
    assert client.post("/products/-x/references", files=files(GOOD)).status_code == 422
    assert client.get("/products/" + "x" * 65).status_code == 422
    assert client.post("/products/..%2F..%2Fetc/references", files=files(GOOD)).status_code in (404, 422)


def test_wrong_method_and_unknown_route(client):
    assert client.get("/inspect").status_code == 405
    assert client.get("/nothing-here").status_code == 404
