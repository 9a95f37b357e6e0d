"""Schema fuzzing (schemathesis): requests generated from the app's own OpenAPI schema, sent in-process (ASGI) to
a real app on the `tiny` detector (random weights). No answer may be a 5xx, and every answer must match the schema:
a status the route declares, its content type, and its body schema. Bounded and derandomized for CI.

The full run, every check and phase (requests the schema forbids included), is `schemathesis run --checks all`
against a server: tests/e2e/test_openapi.py. What stays here is what that run does not do: image parts of random
bytes (there they are real images), a stored product on every product route and a real frame for /inspect, and the
answers without an API key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.helpers.apps import running_app, tiny_settings, upload
from tests.helpers.images import image_bytes

PRODUCT = "widget"
MAX_EXAMPLES = 25
MAX_REPORT_CHARS = 1500
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """`app` with its lifespan answered and ignored: the test's own TestClient runs the real one, once."""

    async def shim(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    return shim


@contextmanager
def served_schema(data_dir: Path, **settings) -> Iterator[BaseSchema]:
    """The schema of a real app (model ready, one stored product), read and called in-process."""
    with running_app(tiny_settings(data_dir, **settings)) as client:
        headers = {"X-API-Key": settings["api_keys"]} if settings.get("api_keys") else {}
        assert upload(client, PRODUCT, image_bytes(seed=0), image_bytes(seed=1), headers=headers).status_code == 201
        yield schemathesis.openapi.from_asgi("/openapi.json", without_lifespan(client.app), headers=headers)
        schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory) -> Iterator[BaseSchema]:
    with served_schema(tmp_path_factory.mktemp("fuzz") / "data") as schema:
        yield schema


def fuzz(strategy: SearchStrategy, max_examples: int) -> None:
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        case.call_and_validate(checks=CHECKS)

    run()


def assert_conforms(schema: BaseSchema, mode: str, max_examples: int = MAX_EXAMPLES) -> None:
    """Fuzz every operation of `schema` in `mode`; all failures are reported together."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode == "stored-product" and operation.path == "/inspect":  # a real frame: the model answers
            strategy = operation.as_strategy(body={"product_id": PRODUCT, "images": [image_bytes(seed=2)]})
        elif mode == "stored-product":
            if "{product_id}" not in operation.path:
                continue
            strategy = operation.as_strategy(path_parameters={"product_id": PRODUCT})
        else:
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
        try:
            fuzz(strategy, max_examples)
        except (Exception, BaseExceptionGroup) as err:
            failures.append(f"{operation.label}: {str(err)[:MAX_REPORT_CHARS]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("mode", ["positive", "stored-product"])
def test_every_answer_is_declared_and_no_5xx(api_schema, mode: str):
    """positive: requests the schema allows, but with random bytes for the images (400/415, declared);
    stored-product: the id of a stored product (and a real frame for /inspect), so requests reach the store and
    the model."""
    assert_conforms(api_schema, mode)


def test_without_the_api_key_every_answer_is_declared(tmp_path):
    """With DCPSFR_API_KEYS set, requests without a key: 401 where a key is needed (declared), the rest answer."""
    with served_schema(tmp_path / "data", api_keys="fuzz-key") as schema:
        assert_conforms(schema, "positive", max_examples=5)
