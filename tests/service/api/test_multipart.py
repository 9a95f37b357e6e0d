"""Image parts as senders write them, in raw multipart bodies: a name only in `filename*` (RFC 5987/2231), no name
but an image Content-Type; and a part that is really a text field gets a message saying what is missing."""

from __future__ import annotations

import pytest

from tests.helpers.apps import upload
from tests.helpers.images import image_bytes

BOUNDARY = "frame-boundary"
HEADERS = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def body(*parts: tuple[list[str], bytes]) -> bytes:
    """A multipart/form-data body of (header lines, content) parts."""
    out = b""
    for headers, content in parts:
        head = f"--{BOUNDARY}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
        out += head.encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def product_field(product_id: str) -> tuple[list[str], bytes]:
    return ['Content-Disposition: form-data; name="product_id"'], product_id.encode()


def image_part(disposition: str, content_type: str | None = "image/png") -> tuple[list[str], bytes]:
    headers = [f'Content-Disposition: form-data; name="images"{disposition}']
    return headers + ([f"Content-Type: {content_type}"] if content_type else []), image_bytes()


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ("; filename*=UTF-8''frame.png", "frame.png"),
        ("; filename*=utf-8'de'Pr%C3%BCfteil%20links.png", "Prüfteil links.png"),  # urllib3 1.x for a non-ASCII name
        ("; filename*0*=UTF-8''Pr%C3%BCf; filename*1=teil.png", "Prüfteil.png"),  # RFC 2231 continuations
        ("", None),  # no name at all, but an image Content-Type: a file (RFC 7578 makes the name optional)
    ],
)
def test_image_parts_without_a_plain_filename_are_images(client, disposition, filename):
    assert upload(client, "part", image_bytes()).status_code == 201
    answer = client.post("/inspect", content=body(product_field("part"), image_part(disposition)), headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["filename"] == filename


def test_a_reference_part_with_only_filename_star_is_a_reference(client):
    parts = [image_part("; filename*=UTF-8''ref%C3%A9rence.png", None) for _ in range(2)]
    answer = client.post("/products/naming/references", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 201, answer.text
    assert answer.json()["n_references"] == 2


@pytest.mark.parametrize("path", ["/inspect", "/products/part/references"])
def test_a_part_without_a_file_name_or_type_is_told_what_is_missing(client, path):
    assert upload(client, "part", image_bytes()).status_code == 201
    parts = [product_field("part")] if path == "/inspect" else []  # references take no product_id field
    answer = client.post(path, content=body(*parts, image_part("", None)), headers=HEADERS)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "Expected UploadFile" not in detail
    assert "has no file name, so it arrived as a text field" in detail
    assert 'filename="frame.png"' in detail and "curl -F images=@frame.png" in detail


def field(name: str, value: str) -> tuple[list[str], bytes]:
    return [f'Content-Disposition: form-data; name="{name}"'], value.encode()


def test_a_product_id_sent_twice_is_refused_not_its_last_value_taken(client):
    for product_id in ("first", "second"):
        assert upload(client, product_id, image_bytes()).status_code == 201
    parts = (product_field("first"), product_field("second"), image_part('; filename="frame.png"'))
    answer = client.post("/inspect", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 422, answer.text
    assert "'product_id' (2 times)" in answer.json()["detail"]


def test_a_label_sent_twice_is_refused_and_nothing_is_stored(client):
    assert upload(client, "part", image_bytes()).status_code == 201
    parts = (field("label", "good"), field("label", "defect"), image_part('; filename="frame.png"'))
    answer = client.post("/products/part/feedback", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 422, answer.text
    assert "'label' (2 times)" in answer.json()["detail"]
    evaluation = client.get("/products/part/evaluation").json()
    assert (evaluation["n_good"], evaluation["n_defect"]) == (0, 0)


def test_repeated_image_parts_are_still_many_images(client):
    assert upload(client, "part", image_bytes()).status_code == 201
    parts = (product_field("part"), *(image_part(f'; filename="f{i}.png"') for i in range(3)))
    answer = client.post("/inspect", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert [r["filename"] for r in answer.json()["results"]] == ["f0.png", "f1.png", "f2.png"]


@pytest.mark.parametrize(
    ("part", "detail"),
    [
        (image_part(f'; filename="{"a" * 5000}.png"'), "header line is longer than 4224 bytes: shorten the file name"),
        (
            ([*image_part('; filename="f.png"')[0], *[f"X-Extra-{i}: 1" for i in range(9)]], image_bytes()),
            "a part has more than 8 headers",
        ),
    ],
)
def test_a_part_over_the_header_limits_is_told_which_limit(client, part, detail):
    assert upload(client, "part", image_bytes()).status_code == 201
    answer = client.post("/inspect", content=body(product_field("part"), part), headers=HEADERS)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("Invalid multipart data: ") and detail in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "extra", "named"),
    [
        ("/inspect", ('; name="image"; filename="second.png"', None), "'image'"),  # a frame under a wrong name
        ("/inspect", field("partid", "SN-1"), "'partid'"),  # a misspelled tag
        ("/products/part/references", field("bitdepth", "12"), "'bitdepth'"),  # the references' bit depth
        ("/products/part/calibration", ('; name="frames"; filename="good.png"', None), "'frames'"),
    ],
)
def test_a_field_the_call_does_not_take_is_refused_not_dropped(client, path, extra, named):
    assert upload(client, "part", image_bytes()).status_code == 201
    if extra[1] is None:  # a file part under another field name
        extra = ([f"Content-Disposition: form-data{extra[0]}", "Content-Type: image/png"], image_bytes())
    parts = [image_part('; filename="frame.png"'), extra]
    if path == "/inspect":
        parts.insert(0, product_field("part"))
    answer = client.post(path, content=body(*parts), headers=HEADERS)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(f"unknown form field {named}; this call takes ") and "images" in detail
    assert client.get("/products/part").json()["version"] == 1  # nothing stored


def test_a_query_parameter_sent_as_a_form_field_is_told_to_go_into_the_url(client):
    assert upload(client, "part", image_bytes()).status_code == 201
    parts = (product_field("part"), field("outputs", "verdict"), image_part('; filename="frame.png"'))
    answer = client.post("/inspect", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 422, answer.text
    assert "'outputs' is a query parameter: send it in the URL (?outputs=...)" in answer.json()["detail"]


def test_every_field_the_inspect_call_takes_is_still_taken(client):
    assert upload(client, "part", image_bytes()).status_code == 201
    tags = {
        "part_id": "SN-1",
        "station": "st3",
        "camera": "top",
        "view": "front",
        "trigger_time": "2026-01-02T03:04:05Z",
    }
    parts = (product_field("part"), *(field(k, v) for k, v in tags.items()), image_part('; filename="f.png"'))
    answer = client.post("/inspect", content=body(*parts), headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["part_id"] == "SN-1"


@pytest.mark.parametrize(
    ("path", "request_kwargs", "sent"),
    [
        ("/inspect", {"json": {"product_id": "part", "images": ["frame.png"]}}, "a body of type application/json"),
        (
            "/products/part/references",
            {"content": image_bytes(), "headers": {"Content-Type": "image/png"}},
            "image/png",
        ),
        ("/products/part/feedback", {"content": b""}, "a body without a Content-Type"),
    ],
)
def test_a_body_that_is_not_a_form_is_told_to_be_one(client, path, request_kwargs, sent):
    """A JSON body holding product_id was answered "product_id: Field required; images: Field required"."""
    assert upload(client, "part", image_bytes()).status_code == 201
    answer = client.post(path, **request_kwargs)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("this call takes its fields (") and "as multipart/form-data, not " in detail
    assert sent in detail and "curl -F images=@frame.png" in detail
    assert client.get("/products/part").json()["version"] == 1
