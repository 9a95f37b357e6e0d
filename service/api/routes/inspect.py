"""POST /inspect: score, verdict, mask and heat map per image; `?format=png` answers one mask as bytes,
`?outputs=verdict` the JSON without PNGs (none is encoded)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import AwareDatetime
from starlette.concurrency import run_in_threadpool

from service.api.dependencies import ReadyServices
from service.api.errors import error_responses
from service.api.openapi import max_files
from service.api.routes.uploads import UploadRoute, read_uploads
from service.api.schemas import InspectedImage, InspectResponse
from service.decisions.results import FULL, MASK_ONLY, VERDICT_ONLY, InspectionResult, Outputs, PartTag
from service.errors import InvalidInput
from service.imaging.formats import PRODUCT_ID, TAG_TEXT
from service.products.store import Product
from service.products.workflows import check_count

Tag = Annotated[str | None, Form(pattern=TAG_TEXT, description="1-128 printable ASCII characters, echoed")]

router = APIRouter(tags=["inspect"], responses=error_responses(401, 403, 503), route_class=UploadRoute)


@router.post(
    "/inspect",
    summary="Inspect images of one product",
    response_model=InspectResponse,
    responses={
        200: {
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
            "description": "the results (JSON; without PNGs with outputs=verdict), or with format=png the mask PNG "
            "with the verdict in X-* headers",
        },
        **error_responses(400, 404, 413, 415, 422, 429, 504),
    },
)
async def inspect(
    services: ReadyServices,
    product_id: Annotated[str, Form(pattern=PRODUCT_ID.pattern, description="a product with uploaded references")],
    images: Annotated[
        list[UploadFile],
        File(description="the images to inspect", json_schema_extra=max_files("max_images_per_request")),
    ],
    format: Annotated[
        Literal["json", "png"], Query(description="png: the mask PNG as the body (send exactly one image)")
    ] = "json",
    outputs: Annotated[
        Literal["full", "verdict"],
        Query(
            description="verdict: the JSON without the mask and heat-map PNGs (null; none is encoded), for stations "
            "that need only verdict, score, regions and rule; full: with them (JSON only)"
        ),
    ] = "full",
    part_id: Tag = None,
    station: Tag = None,
    camera: Tag = None,
    view: Tag = None,
    trigger_time: Annotated[
        AwareDatetime | None,
        Form(description="ISO 8601 time of the trigger with its UTC offset (Z or +01:00), echoed"),
    ] = None,
) -> Response:
    """Scores each image against the product's references: verdict, score, thresholds, regions, mask and heat-map PNGs
    (base64; null with outputs=verdict), or with format=png one image's mask PNG with the verdict in X-* headers. 404
    unknown product, 413 too many images or pixels, 415/400 unsupported or broken image, 422 a bad field (format=png
    with outputs=verdict too; a trigger_time without a UTC offset, which would be read as UTC whatever the line's
    zone), 429 queue full, 503 model not ready, 504 model timeout. `part_id`, `station`, `camera`,
    `view` and `trigger_time` tag the request's parts and are echoed in each result."""
    workflows = services.workflows
    product = await workflows.existing(product_id)  # another replica's, or not loaded yet: read from disk
    check_count(images, services.settings.max_images_per_request, "DCPSFR_MAX_IMAGES_PER_REQUEST")
    if format == "png" and len(images) != 1:
        raise InvalidInput(f"format=png answers exactly one image; this request has {len(images)}")
    if format == "png" and outputs == "verdict":
        raise InvalidInput("format=png answers the mask PNG; outputs=verdict has none: use one or the other")
    uploads = await read_uploads(images)
    part = PartTag(part_id, station, camera, view, trigger_time)
    with services.worker.admit() as ticket:  # 503/429 before decoding; counted as incoming while it decodes
        inspected = await workflows.inspect(product, uploads, ticket, asked_outputs(format, outputs), part=part)
    if format == "png":
        result = inspected.results[0]
        return Response(result.mask_png, media_type="image/png", headers=png_headers(result, product))
    filenames = [u.filename for u in uploads]
    if outputs == "verdict":  # a few hundred bytes without the PNGs: a thread hop would cost more than the work
        return Response(inspect_body(product, inspected.results, filenames, part), media_type="application/json")
    body = await run_in_threadpool(inspect_body, product, inspected.results, filenames, part)
    return Response(body, media_type="application/json")


def asked_outputs(format: str, outputs: str) -> Outputs:
    """The pictures a request's `format` and `outputs` ask for: the mask alone for format=png, none for
    outputs=verdict, else both PNGs."""
    if format == "png":
        return MASK_ONLY
    return VERDICT_ONLY if outputs == "verdict" else FULL


def inspect_body(
    product: Product, results: list[InspectionResult], filenames: list[str | None], part: PartTag | None = None
) -> bytes:
    """The JSON body (InspectResponse), built off the event loop: base64 of every PNG asked for, then the JSON
    text."""
    answer = InspectResponse(
        product_id=product.product_id,
        reference_version=product.version,
        results=[InspectedImage.of(r, name, part) for r, name in zip(results, filenames, strict=True)],
    )
    return answer.model_dump_json().encode()


def png_headers(result: InspectionResult, product: Product) -> dict[str, str]:
    """The X-* headers that carry the verdict when POST /inspect answers the mask PNG (format=png)."""
    return {
        "X-Anomaly-Score": repr(result.score),
        "X-Score-Scale": result.score_scale,
        "X-Inspection-Id": result.inspection_id,
        "X-Anomalous": "true" if result.anomalous else "false",
        "X-Threshold": repr(result.threshold),
        "X-Pixel-Threshold": repr(result.pixel_threshold),
        "X-Product-Id": product.product_id,
        "X-Reference-Version": str(product.version),
        "X-Mode": result.mode,
        "X-Region-Count": str(result.n_regions),
        "X-Rule": result.rule or "",
    }
