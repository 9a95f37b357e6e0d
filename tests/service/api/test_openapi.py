"""The OpenAPI schema is the exact contract (service.api.openapi, completed at create_app): what the schema calls valid,
the service takes, and the other way round; its limits are the app's settings; 405 answers name every method of the
path. The real run (`schemathesis run --checks all` against a server) is tests/e2e/test_openapi.py."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from service.api.openapi import IMAGE_FORMAT
from service.imaging.formats import PRODUCT_ID
from tests.helpers.apps import upload
from tests.helpers.images import image_bytes

GOOD = image_bytes(48, 40, seed=0)
FEEDBACK = "/products/{product_id}/feedback"


def form_body(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The multipart body schema of the POST at `path` (its component, resolved)."""
    ref = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def validator(schema: dict[str, Any], component: str) -> Draft202012Validator:
    """A JSON Schema validator of one component, its $refs resolved in the served schema."""
    return Draft202012Validator({**schema, "$ref": f"#/components/schemas/{component}"})


def test_a_405_allows_every_documented_method_of_its_path(client):
    """Starlette's own 405 named only the first matching route's methods (OPTIONS /products/{id}: `Allow: GET`)."""
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        answer = client.options(path.replace("{product_id}", "widget"))
        assert answer.status_code == 405
        allowed = set(answer.headers["allow"].split(", ")) - {"HEAD"}
        assert allowed == {method.upper() for method in operations}, path
    assert client.post("/").headers["allow"] == "GET"  # the console's page, outside the schema
    assert client.post("/products/widget/threshold").headers["allow"] == "PUT"


def test_the_product_id_pattern_is_the_path_parameters_and_the_console_reads_it(client):
    schema = client.get("/openapi.json").json()
    seen = 0
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "product_id" and parameter["in"] == "path":
                    assert parameter["schema"]["pattern"] == PRODUCT_ID.pattern, path
                    seen += 1
                elif parameter["name"] == "product_id":  # an optional filter (GET /inspections): string or null
                    assert parameter["schema"]["anyOf"][0]["pattern"] == PRODUCT_ID.pattern, path
    assert seen >= 10
    console = client.get("/ui/app.js").text + client.get("/").text
    assert "A-Za-z0-9" not in console  # no copy of the pattern in the page or its script
    assert "parameter.schema.pattern" in client.get("/ui/app.js").text  # read from /openapi.json


def test_image_fields_take_images_as_many_as_the_settings_allow(make_client):
    settings = {"max_references": 5, "calibration_max_frames": 7, "max_images_per_request": 9}
    with make_client(**settings) as client:
        schema = client.get("/openapi.json").json()
    expected = {  # (path, field) -> (minItems, maxItems); an optional field has no minimum (no part is none)
        ("/products/{product_id}/references", "images"): (1, 5),
        ("/products/{product_id}/references", "calibration"): (None, 7),
        ("/products/{product_id}/calibration", "images"): (1, 7),
        ("/inspect", "images"): (1, 9),
        (FEEDBACK, "images"): (None, 1),
    }
    for (path, name), (least, most) in expected.items():
        field = form_body(schema, path)["properties"][name]
        assert (field.get("minItems"), field["maxItems"]) == (least, most), (path, name)
        assert field["items"]["format"] == IMAGE_FORMAT
        assert field["items"]["contentMediaType"] == "application/octet-stream"  # still a file part


def test_too_many_images_are_refused_at_the_schemas_limit(make_client):
    with make_client(max_references=2) as client:
        assert upload(client, "widget", GOOD, GOOD).status_code == 201
        assert upload(client, "widget", GOOD, GOOD, GOOD).status_code == 413


def test_optional_form_fields_are_absent_or_a_value_never_null(client):
    """A multipart part cannot carry a JSON null: `bit_depth=null` was schema-valid and a 422."""
    schema = client.get("/openapi.json").json()
    bit_depth = form_body(schema, "/products/{product_id}/references")["properties"]["bit_depth"]
    assert (bit_depth["type"], bit_depth["minimum"], bit_depth["maximum"]) == ("integer", 8, 16)
    assert "bit_depth" not in form_body(schema, "/products/{product_id}/references")["required"]
    for path in ("/products/{product_id}/references", "/products/{product_id}/calibration", FEEDBACK, "/inspect"):
        for name, field in form_body(schema, path)["properties"].items():
            assert "anyOf" not in field and field.get("type") != "null", (path, name)


def test_form_bodies_forbid_fields_the_service_refuses(client):
    """A field a route does not take is a 422 (UploadRoute), so the schema must not allow it either."""
    schema = client.get("/openapi.json").json()
    for path in ("/products/{product_id}/references", "/products/{product_id}/calibration", FEEDBACK, "/inspect"):
        assert form_body(schema, path)["additionalProperties"] is False, path
    inspect = validator(schema, form_body(schema, "/inspect")["title"])
    assert inspect.is_valid({"product_id": "p", "images": ["png"], "part_id": "SN-1"})
    assert not inspect.is_valid({"product_id": "p", "images": ["png"], "partid": "SN-1"})


def test_feedback_takes_one_file_in_images_and_refuses_the_old_image_field(client):
    schema = client.get("/openapi.json").json()
    image = form_body(schema, FEEDBACK)["properties"]["image"]
    assert image["maxLength"] == 0 and "'images'" in image["description"]  # absent (or empty: FastAPI's none)
    upload(client, "widget", GOOD)
    old = client.post("/products/widget/feedback", data={"label": "good"}, files={"image": ("f.png", GOOD)})
    assert old.status_code == 422 and "multipart field 'images'" in old.json()["detail"]
    new = client.post("/products/widget/feedback", data={"label": "good"}, files={"images": ("f.png", GOOD)})
    assert new.status_code == 200, new.text


@pytest.mark.parametrize(
    ("form", "valid"),
    [
        ({"label": "good"}, False),  # neither a frame nor an inspection id
        ({"label": "good", "inspection_id": "0" * 32}, True),  # (404: not a recent inspection)
        ({"label": "good", "images": ["png"]}, True),
        ({"label": "good", "inspection_id": "0" * 32, "images": ["png"]}, False),  # both
        ({"label": "good", "images": ["png"], "add_to_references": True}, True),
        ({"label": "defect", "images": ["png"], "add_to_references": True}, False),  # only a good one joins
        ({"label": "defect", "images": ["png"], "add_to_references": False}, True),
    ],
)
def test_the_feedback_schema_says_which_frames_it_takes(client, form, valid):
    schema = client.get("/openapi.json").json()
    name = form_body(schema, FEEDBACK)["title"]
    assert validator(schema, name).is_valid(form) == valid
    upload(client, "widget", GOOD)
    data = {k: str(v).lower() for k, v in form.items() if k != "images"}
    files = {"images": ("f.png", GOOD)} if "images" in form else None
    status = client.post("/products/widget/feedback", data=data, files=files).status_code
    assert (status != 422) == valid, status


@pytest.mark.parametrize(
    ("rules", "valid"),
    [
        ({"max_area_mm2": 2.0}, False),  # a mm limit needs the scale
        ({"max_length_mm": 2.0, "mm_per_pixel": None}, False),
        ({"max_area_mm2": 2.0, "mm_per_pixel": 0.1}, True),
        ({"max_area_mm2": None, "max_length_mm": None}, False),  # rules must set something: clearing is DELETE
        ({}, False),
        ({"reject_in": [], "ignore_in": []}, False),
        ({"ignore_in": [[[0, 0], [9, 0], [9, 9]]], "max_regions": None}, True),
        ({"max_regions": True}, False),  # JSON numbers only: true and "5" are not numbers
        ({"min_area_px": "5"}, False),
        ({"min_area_px": 5.0}, True),  # an integer in JSON
        ({"reject_in": [[[0, 0], [9, 0], [9, True]]]}, False),
    ],
)
def test_the_rules_schema_and_the_service_agree(client, rules, valid):
    schema = client.get("/openapi.json").json()
    assert validator(schema, "AcceptanceRules").is_valid(rules) == valid
    upload(client, "widget", GOOD)
    answer = client.put("/products/widget/rules", json=rules)
    assert answer.status_code == (200 if valid else 422), answer.text


@pytest.mark.parametrize("value", ["0", "1", "yes", "off"])
def test_a_form_boolean_is_true_or_false(client, value):
    """The schema's `boolean` goes over the wire as `true` / `false`; pydantic alone read 0, 1, yes, off, ..."""
    upload(client, "widget", GOOD)
    form = {"label": "good", "add_to_references": value}
    answer = client.post("/products/widget/feedback", data=form, files={"images": ("f.png", GOOD)})
    assert answer.status_code == 422


@pytest.mark.parametrize("body", [{"threshold": "0.5"}, {"threshold": True}, {"threshold": 0, "pixel_threshold": "1"}])
def test_a_threshold_is_a_json_number(client, body):
    upload(client, "widget", GOOD)
    assert client.put("/products/widget/threshold", json=body).status_code == 422


def test_every_route_declares_its_answers(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # every 422 is the service's ErrorBody
    for path, operations in paths.items():
        for method, operation in operations.items():
            success = [status for status in operation["responses"] if status.startswith("2")]
            assert len(success) == 1, (method, path)
            answer = operation["responses"][success[0]]
            if (method, path) == ("delete", "/products/{product_id}"):
                assert success == ["204"] and "content" not in answer  # no body
                continue
            for media_type, content in answer["content"].items():
                assert "schema" in content, (method, path, media_type)
    assert set(paths["/inspect"]["post"]["responses"]["200"]["content"]) == {"application/json", "image/png"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_a_created_product_links_to_the_operations_on_it(client):
    schema = client.get("/openapi.json").json()
    links = schema["paths"]["/products/{product_id}/references"]["post"]["responses"]["201"]["links"]
    operation_ids = {
        operation["operationId"]: (method, path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    targets = {operation_ids[link["operationId"]] for link in links.values()}
    assert ("get", "/products/{product_id}") in targets and ("delete", "/products/{product_id}") in targets
    assert ("put", "/products/{product_id}/rules") in targets
    assert all(method in ("get", "put", "delete") for method, _ in targets)
    assert all(link["parameters"] == {"product_id": "$response.body#/product_id"} for link in links.values())
