"""One table says which paths are open, probes and model routes; the middleware and the drain read only it."""

from __future__ import annotations

import pytest

from service.api.paths import classify, is_model_route, is_open, is_probe


@pytest.mark.parametrize(
    ("path", "open_", "probe"),
    [
        ("/healthz", True, True),
        ("/readyz", True, True),
        ("/metrics", False, True),  # the figures need a key; still a probe while draining
        ("/", True, False),
        ("/ui", True, False),
        ("/ui/app.js", True, False),
        ("/uix", False, False),  # not the console's folder
        ("/products", False, False),
        ("/inspect", False, False),
    ],
)
def test_open_and_probe_paths(path, open_, probe):
    assert (is_open(path), is_probe(path)) == (open_, probe)


def test_model_routes_are_the_posts_that_queue_work():
    assert is_model_route("POST", "/inspect") and is_model_route("POST", "/products/bottle/references")
    assert not is_model_route("GET", "/inspect") and not is_model_route("DELETE", "/products/bottle/references")
    assert not is_model_route("POST", "/products/bottle/feedback")
    assert not is_model_route("POST", "/products/a/b/references")  # a product id has no slash
    assert classify("/products/bottle/rules").pattern == ".*"  # the API: a key, counted, refused while draining
