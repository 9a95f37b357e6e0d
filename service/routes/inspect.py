"""POST /inspect: score, verdict, mask and heat map per image; `?format=png` answers one mask as bytes."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from service.dependencies import ReadyServices, check_product_id, existing_product
from service.errors import InvalidField, error_responses
from service.history import Inspection, now_iso
from service.results import InspectionResult, InspectResponse, RegionLimits, encode_results, png_headers
from service.store import Product
from service.uploads import check_count

router = APIRouter(tags=["inspect"], responses=error_responses(401, 403, 503))


@router.post(
    "/inspect",
    summary="Inspect images of one product",
    responses={
        200: {
            "model": InspectResponse,
            "content": {"image/png": {}},
            "description": "the results (JSON), or with format=png the mask PNG with the verdict in X-* headers",
        },
        **error_responses(400, 404, 413, 415, 422, 429, 504),
    },
)
async def inspect(
    services: ReadyServices,
    product_id: Annotated[str, Form(description="a product with uploaded references")],
    images: Annotated[list[UploadFile], File(description="one or more images to inspect")],
    format: Annotated[Literal["json", "png"], Query(description="png: the mask PNG as the body (one image)")] = "json",
) -> Any:
    """Scores each image against the product's references: verdict, score, thresholds, regions, mask and heat-map PNGs
    (base64), or with format=png one image's mask PNG with the verdict in X-* headers. 404 unknown product, 413 too many
    images or pixels, 415/400 unsupported or broken image, 422 a bad field, 429 queue full, 503 model not ready, 504
    model timeout."""
    # a product not in memory yet (another replica's, or not loaded since start-up) is read from disk
    product = await run_in_threadpool(existing_product, services.store, check_product_id(product_id))
    check_count(images, services.settings.max_images_per_request, "DCPSFR_MAX_IMAGES_PER_REQUEST")
    if format == "png" and len(images) != 1:
        raise InvalidField(f"format=png answers exactly one image; this request has {len(images)}")
    worker = services.worker
    with worker.admit() as ticket:  # 503/429 before decoding; counted as incoming while it decodes
        decoded, decode_ms = await services.decoder.decode(images)
        batch = await worker.result(worker.submit_predict(product, decoded, ticket))
    limits = RegionLimits(services.settings.min_region_area_px, services.settings.max_regions_listed)
    async with services.decoder.slots:  # encoding shares the bound on CPU-heavy image work with decoding
        results = await encode_results(batch, product, decode_ms, services.metrics, format == "json", limits, decoded)
    for result, upload in zip(results, images, strict=True):
        services.metrics.count_inspection(result.anomalous, product.product_id, result.relative_score)
        services.history.record(await history_entry(result, upload, product))
    if format == "png":
        return Response(results[0].mask_png, media_type="image/png", headers=png_headers(results[0], product))
    filenames = [image.filename for image in images]
    body = await run_in_threadpool(inspect_body, product, results, filenames)
    return Response(body, media_type="application/json")


def inspect_body(product: Product, results: list[InspectionResult], filenames: list[str | None]) -> bytes:
    """The JSON body, built off the event loop (base64 of every PNG, then the JSON text)."""
    body = {
        "product_id": product.product_id,
        "reference_version": product.version,
        "results": [result.as_json(name) for result, name in zip(results, filenames, strict=True)],
    }
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def history_entry(result: InspectionResult, upload: UploadFile, product: Product) -> Inspection:
    """The ring entry of one inspected frame, with the uploaded bytes for later feedback."""
    await upload.seek(0)
    return Inspection(
        inspection_id=result.inspection_id,
        product_id=product.product_id,
        version=product.version,
        time=now_iso(),
        score=result.score,
        score_scale=result.score_scale,
        threshold=result.threshold,
        anomalous=result.anomalous,
        filename=upload.filename,
        width=result.width,
        height=result.height,
        thumbnail=result.thumbnail or "",
        frame=await upload.read(),
    )
