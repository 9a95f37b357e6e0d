"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.helpers.openapi_hooks) for the two rules of the service's contract
that OpenAPI cannot state, so that the requests generated as valid are valid (the ones generated as invalid are
left as they are, and must still be refused):

- every uploaded file part is `format: image` (service.api.openapi): it gets a real small image (PNG, JPEG, BMP or
  TIFF; colour or grey), so valid requests reach the model;
- POST /inspect?format=png answers one image's mask: a valid request with format=png sends one image (a rule
  between the query and the body).
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from service.api.openapi import IMAGE_FORMAT
from tests.helpers.images import image_bytes

SIDES = st.integers(16, 48)  # pixels: small, so the tiny model answers fast

images = st.builds(
    image_bytes,
    width=SIDES,
    height=SIDES,
    seed=st.integers(0, 2**16),
    fmt=st.sampled_from(["PNG", "JPEG", "BMP", "TIFF"]),
    mode=st.sampled_from(["RGB", "L"]),
)
schemathesis.openapi.format(IMAGE_FORMAT, images)


@schemathesis.hook
def map_case(ctx, case):
    """A valid POST /inspect?format=png keeps only its first image."""
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    png = ctx.operation.label == "POST /inspect" and (case.query or {}).get("format") == "png"
    if positive and png and isinstance(case.body, dict) and isinstance(case.body.get("images"), list):
        case.body["images"] = case.body["images"][:1]
    return case
