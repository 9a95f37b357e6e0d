"""The OpenAPI schema as the exact contract: what FastAPI derives from the routes, completed once per app by
`install_openapi` (create_app calls it) with what FastAPI cannot derive:

- image uploads: every file part is an image (`format: image`: PNG, JPEG, BMP or TIFF bytes), and each file field
  takes 1 to N files, N from the app's settings (the route names the setting with `max_files`);
- optional multipart fields are absent or a value, never null (a form part cannot carry a JSON null);
- a field the service refuses (`refused`: an old field name that gets a hint) must be absent (or empty, which
  FastAPI reads as absent); a field the route does not take at all is refused too (additionalProperties: false);
- cross-field rules a route puts next to its form body's `$ref` (`openapi_extra`) go into the body's model;
- a product created by POST /products/{product_id}/references links to the GET, PUT and DELETE operations on it.

What OpenAPI cannot say at all (that an image part decodes; that `POST /inspect?format=png` takes one image) the
schemathesis run in the tests supplies with a hook: tests/helpers/openapi_hooks.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.settings import Settings

IMAGE_FORMAT = "image"  # the `format` of every uploaded file part
IMAGE_DESCRIPTION = "an image file: PNG, JPEG, BMP or TIFF"
FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
CREATED_PRODUCT = ("/products/{product_id}/references", "post", "201")  # the answer that names a stored product
PRODUCT_PATH = "/products/{product_id}"

_MAX_FILES = "x-max-files"  # markers the routes put on fields, replaced here (never served)
_REFUSED = "x-refused"


def max_files(limit: str | int) -> dict[str, Any]:
    """`json_schema_extra` of a file field: at most `limit` files, a Settings attribute name or a number."""
    return {_MAX_FILES: limit}


def refused(why: str) -> dict[str, Any]:
    """`json_schema_extra` of a form field the service refuses with a hint (`why`): the schema forbids it."""
    return {_REFUSED: why}


def is_refused(json_schema_extra: object) -> bool:
    """Whether a field's `json_schema_extra` marks it as refused (see `refused`)."""
    return isinstance(json_schema_extra, dict) and _REFUSED in json_schema_extra


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the completed schema at /openapi.json (and in /docs): built on first use, then cached."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI's, which it caches in app.openapi_schema: completed in place, once
            app.openapi_schema = None
            complete_schema(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete_schema(schema: dict[str, Any], settings: Settings) -> None:
    """Add to FastAPI's schema what it cannot derive (see the module docstring); changes `schema` in place."""
    for operation in operations(schema):
        for media_type in FORM_MEDIA_TYPES:
            body = operation.get("requestBody", {}).get("content", {}).get(media_type)
            if body is not None:
                form = resolve(schema, body["schema"])
                form.update(body_rules(body))
                complete_form(form, settings)
    link_created_product(schema)


def operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation object of the schema."""
    return [op for path_item in schema.get("paths", {}).values() for op in path_item.values() if isinstance(op, dict)]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or the component its local `$ref` points to."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def body_rules(body: dict[str, Any]) -> dict[str, Any]:
    """Keywords a route put next to its form body's `$ref` (`openapi_extra`: FastAPI generates the body model, so a
    route cannot give it cross-field rules otherwise), taken off to go into the model (where tools look)."""
    node = body["schema"]
    if "$ref" not in node:
        return {}
    rules = {k: v for k, v in node.items() if k != "$ref"}
    body["schema"] = {"$ref": node["$ref"]}
    return rules


def complete_form(body: dict[str, Any], settings: Settings) -> None:
    """One form body's schema: no null alternatives, refused and unknown fields forbidden, file fields as counted
    images."""
    body["additionalProperties"] = False  # UploadRoute refuses a field the route does not take
    required = set(body.get("required", ()))
    properties = body.get("properties", {})
    for name, field in list(properties.items()):
        if _REFUSED in field:
            # absent (or empty: FastAPI reads an empty form value as none); anything else is a 422 with the hint
            properties[name] = {"type": "string", "maxLength": 0, "description": f"refused: {field[_REFUSED]}"}
            continue
        if name not in required:
            field = properties[name] = without_null(field)
        if field.get("type") == "array" and is_file(field.get("items", {})):
            limit = field.pop(_MAX_FILES, None)
            assert limit is not None, f"the file field {name!r} has no max_files(...) limit"
            if name in required:  # no part is an absent field (an empty list cannot be sent): required, 1 or more
                field["minItems"] = 1
            field["maxItems"] = limit if isinstance(limit, int) else int(getattr(settings, limit))
            field["items"] = image_part(field["items"])
        elif is_file(field):
            properties[name] = image_part(field)


def without_null(field: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its `null` alternative: a form field is absent or a value."""
    alternatives = field.get("anyOf")
    if not alternatives or {"type": "null"} not in alternatives:
        return field
    rest = [a for a in alternatives if a != {"type": "null"}]
    outer = {k: v for k, v in field.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**rest[0], **outer} if len(rest) == 1 else {**outer, "anyOf": rest}


def is_file(field: dict[str, Any]) -> bool:
    """Whether a property is an uploaded file (OpenAPI 3.1: a string with content application/octet-stream)."""
    return field.get("type") == "string" and (
        field.get("contentMediaType") == "application/octet-stream" or field.get("format") == "binary"
    )


def image_part(field: dict[str, Any]) -> dict[str, Any]:
    """A file part that must be an image the service decodes."""
    return {"description": IMAGE_DESCRIPTION, **field, "format": IMAGE_FORMAT}


def link_created_product(schema: dict[str, Any]) -> None:
    """Links from the created product to every GET, PUT and DELETE operation on /products/{product_id}..., so
    clients (and stateful tests) can follow a stored product."""
    path, method, status = CREATED_PRODUCT
    paths = schema.get("paths", {})
    response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
    if response is None:
        return
    links = {}
    for target, path_item in paths.items():
        if not (target == PRODUCT_PATH or target.startswith(PRODUCT_PATH + "/")):
            continue
        for target_method in ("get", "put", "delete"):
            operation = path_item.get(target_method)
            if operation is not None and "operationId" in operation:
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {"product_id": "$response.body#/product_id"},
                    "description": f"{target_method.upper()} {target} of the stored product",
                }
    response["links"] = links
