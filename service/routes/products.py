"""Products: upload references (fit, calibrate, persist), list, show, delete, override the thresholds."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, File, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.calibration import FittedProduct, fit_and_calibrate
from service.dependencies import ProductId, ReadyServices, Services, existing_product
from service.errors import Conflict, StorageFailed, error_responses
from service.results import mode_label
from service.store import Product, StoreConflict, StoreError
from service.uploads import check_count, decode_uploads

router = APIRouter(prefix="/products", tags=["products"], responses=error_responses(401, 403, 503))


class ThresholdUpdate(BaseModel):
    """Replaces both overrides: a field left out (or null) goes back to its calibrated value."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(allow_inf_nan=False, description="image score above it -> anomalous")
    pixel_threshold: float | None = Field(
        None, allow_inf_nan=False, description="anomaly-map value above it -> in the mask; null = calibrated"
    )


def product_view(product: Product, services: Services) -> dict[str, Any]:
    detector = services.worker.detector
    return {**product.summary(), "mode": mode_label(detector.mode, detector.random_weights)}


@router.post(
    "/{product_id}/references",
    status_code=201,
    summary="Fit, calibrate and store a product's references",
    responses=error_responses(400, 409, 413, 415, 422, 429, 507),
)
async def upload_references(
    product_id: ProductId,
    services: ReadyServices,
    images: Annotated[list[UploadFile], File(description="1-16 images of good parts")],
) -> dict[str, Any]:
    check_count(images, services.settings.max_references, "DCPSFR_MAX_REFERENCES")
    expected = await run_in_threadpool(services.store.token, product_id)  # checked again at commit
    decoded, decode_ms = await decode_uploads(images, services.settings.max_pixels, services.metrics)
    fitting = services.worker.submit_call(partial(fit_and_calibrate, images=decoded), "fit")
    fitted: FittedProduct = await asyncio.wrap_future(fitting)
    start = time.perf_counter()
    try:
        commit = partial(services.store.commit, expected=expected)
        product = await run_in_threadpool(commit, product_id, fitted.refs, fitted.calibration)
    except StoreConflict as err:
        raise Conflict(str(err)) from err
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    services.metrics.products.set(len(services.store))
    timings = {"decode": sum(decode_ms), **fitted.timings_ms, "store": (time.perf_counter() - start) * 1000.0}
    return {**product_view(product, services), "timings_ms": timings}


@router.get("", summary="List products")
def list_products(services: ReadyServices) -> dict[str, Any]:
    return {"products": [product_view(p, services) for p in services.store.all()]}


@router.get("/{product_id}", summary="Show one product", responses=error_responses(404, 422))
def show_product(product_id: ProductId, services: ReadyServices) -> dict[str, Any]:
    return product_view(existing_product(services.store, product_id), services)


@router.delete(
    "/{product_id}",
    status_code=204,
    summary="Remove a product and its stored references",
    responses=error_responses(404, 422, 507),
)
def delete_product(product_id: ProductId, services: ReadyServices) -> Response:
    try:
        deleted = services.store.delete(product_id)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    if not deleted:
        existing_product(services.store, product_id)  # raises the 404
    services.metrics.products.set(len(services.store))
    return Response(status_code=204)


@router.put(
    "/{product_id}/threshold",
    summary="Override the calibrated thresholds",
    responses=error_responses(400, 404, 413, 422, 507),
)
def set_threshold(product_id: ProductId, update: ThresholdUpdate, services: ReadyServices) -> dict[str, Any]:
    try:
        product = services.store.set_thresholds(product_id, update.threshold, update.pixel_threshold)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    if product is None:
        existing_product(services.store, product_id)  # raises the 404
    return product_view(product, services)
