"""Products: upload references (fit, calibrate, persist), list, show, delete, override the thresholds; the
calibration set, operator feedback, its evaluation and the recent inspections. List, show, delete and the
threshold override need no model: they answer while it loads or when it is unavailable."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from model import Prediction
from service.calibration import (
    CalibrationPolicy,
    FittedProduct,
    decision_score,
    extend_and_calibrate,
    fit_and_calibrate,
    recalibrate,
)
from service.dependencies import (
    ProductId,
    ReadyServices,
    Services,
    StoreServices,
    existing_product,
    unknown_product,
)
from service.errors import ApiError, Conflict, InvalidField, NotFound, StorageFailed, Unavailable, error_responses
from service.feedback import (
    FrameStore,
    LabelledFrame,
    bounded,
    calibration_values,
    evaluate,
    new_frame,
    relabelled,
)
from service.history import now_iso
from service.images import decode_image
from service.results import mode_label
from service.store import CALIBRATION_FILE, Product, ProductMissing, StoreConflict, StoreError, StoreUnavailable
from service.uploads import check_bit_depth, check_count, upload_name

log = logging.getLogger(__name__)
router = APIRouter(prefix="/products", tags=["products"], responses=error_responses(401, 403, 503))


MAX_THRESHOLD = 1e30  # within float32, which the maps are compared in


class ThresholdUpdate(BaseModel):
    """Replaces both overrides: `threshold` is required; `pixel_threshold` left out (or null) goes back to its
    calibrated value."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(
        ge=-MAX_THRESHOLD, le=MAX_THRESHOLD, allow_inf_nan=False, description="image score above it -> anomalous"
    )
    pixel_threshold: float | None = Field(
        None,
        ge=-MAX_THRESHOLD,
        le=MAX_THRESHOLD,
        allow_inf_nan=False,
        description="anomaly-map value above it -> in the mask; null = calibrated",
    )


def product_view(product: Product, services: Services) -> dict[str, Any]:
    """The product's summary as the routes answer it, plus `mode` (null while the model is not loaded)."""
    detector = services.worker.detector  # None while the model loads or when it cannot: mode is null then
    mode = None if detector is None else mode_label(detector.mode, detector.random_weights)
    return {**product.summary(), "mode": mode}


def calibration_policy(services: Services) -> CalibrationPolicy:
    """The calibration policy from the settings (target false-alarm rate, minimum frames)."""
    settings = services.settings
    return CalibrationPolicy(settings.target_false_alarm_rate, settings.calibration_min_frames)


@router.post(
    "/{product_id}/references",
    status_code=201,
    summary="Fit, calibrate and store a product's references",
    responses=error_responses(400, 409, 413, 415, 422, 429, 504, 507),
)
async def upload_references(
    product_id: ProductId,
    services: ReadyServices,
    images: Annotated[list[UploadFile], File(description="1-16 images of good parts")],
    calibration: Annotated[
        list[UploadFile] | None, File(description="optional extra good frames: the calibration set, not references")
    ] = None,
    bit_depth: Annotated[
        int | None,
        Form(ge=8, le=16, description="bits of real data in 16-bit frames without sBIT; default: from the references"),
    ] = None,
) -> dict[str, Any]:
    """The product's stored calibration and labelled frames are kept and scored against the new references."""
    settings = services.settings
    check_count(images, settings.max_references, "DCPSFR_MAX_REFERENCES")
    if calibration:
        check_count(calibration, settings.calibration_max_frames, "DCPSFR_CALIBRATION_MAX_FRAMES")
    decoded, decode_ms = await services.decoder.decode(images)
    if bit_depth is not None:
        names = [upload_name(file, i) for i, file in enumerate(images)]
        await run_in_threadpool(check_bit_depth, decoded, names, bit_depth)
    added_images, added_ms = await services.decoder.decode(calibration) if calibration else ([], [])
    added = [new_frame("good", "calibration", now_iso(), f.filename) for f in calibration or []]
    added_files = {frame.frame_id: await read_again(f) for frame, f in zip(added, calibration or [], strict=True)}
    async with services.frames.lock(product_id):
        expected = await run_in_threadpool(services.store.token, product_id)  # checked again at commit
        stored, stored_images = await run_in_threadpool(load_frames, services, product_id)
        frames = bounded(stored + added, settings.calibration_max_frames, settings.feedback_max_frames)
        images_by_id = {**stored_images, **{f.frame_id: image for f, image in zip(added, added_images, strict=True)}}
        frame_images = [images_by_id[f.frame_id] for f in frames]
        call = partial(
            fit_and_calibrate,
            images=decoded,
            frames=frame_images,
            policy=calibration_policy(services),
            good=[f.label == "good" for f in frames],
            bit_depth=bit_depth,
        )
        fitted: FittedProduct = await services.worker.result(services.worker.submit_call(call, "fit"))
        start = time.perf_counter()
        product = await commit(services, product_id, fitted, expected)
        await save_scored(services, product, frames, fitted.frame_predictions, added_files)
    services.metrics.products.set(len(services.store))
    decode_total = sum(decode_ms) + sum(added_ms)
    timings = {"decode": decode_total, **fitted.timings_ms, "store": (time.perf_counter() - start) * 1000.0}
    return {**product_view(product, services), "timings_ms": timings}


@router.post(
    "/{product_id}/calibration",
    summary="Add good frames to the calibration set; thresholds recomputed",
    responses=error_responses(400, 404, 409, 413, 415, 422, 429, 504, 507),
)
async def add_calibration_frames(
    product_id: ProductId,
    services: ReadyServices,
    images: Annotated[list[UploadFile], File(description="good frames of this product, as the camera takes them")],
) -> dict[str, Any]:
    """References unchanged (no refit, no backbone pass for them): only the new frames are scored."""
    settings = services.settings
    await run_in_threadpool(existing_product, services.store, product_id)
    check_count(images, settings.calibration_max_frames, "DCPSFR_CALIBRATION_MAX_FRAMES")
    decoded, _ = await services.decoder.decode(images)
    added = [new_frame("good", "calibration", now_iso(), f.filename) for f in images]
    files = {frame.frame_id: await read_again(f) for frame, f in zip(added, images, strict=True)}
    async with services.frames.lock(product_id):
        product = await run_in_threadpool(existing_product, services.store, product_id)
        kept = await score_and_keep(services, product, added, decoded, files)
        product = await recalibrated(services, product, kept)
    return product_view(product, services)


@router.post(
    "/{product_id}/feedback",
    summary="Label a frame good or defect (an inspection id or an image)",
    responses=error_responses(400, 404, 409, 413, 415, 422, 429, 504, 507),
)
async def give_feedback(
    product_id: ProductId,
    services: ReadyServices,
    label: Annotated[Literal["good", "defect"], Form(description="the operator's verdict")],
    inspection_id: Annotated[str | None, Form(description="a recent inspection of this product")] = None,
    image: Annotated[UploadFile | None, File(description="or the frame itself")] = None,
    add_to_references: Annotated[
        bool, Form(description="good frames only: also add it to the references (a new version)")
    ] = False,
) -> dict[str, Any]:
    """A good frame joins the calibration set (thresholds recomputed); every labelled frame is kept (bounded)
    for GET /products/{id}/evaluation."""
    settings = services.settings
    product = await run_in_threadpool(existing_product, services.store, product_id)
    if (inspection_id is None) == (image is None):
        raise InvalidField("send either the form field 'inspection_id' or one file 'image', not both or neither")
    if add_to_references and label != "good":
        raise InvalidField("only a frame labelled 'good' can join the references")
    if add_to_references:
        check_room_for_a_reference(product, settings.max_references)
    data, filename = await feedback_frame(services, product_id, inspection_id, image)
    decoded = await run_in_threadpool(decode_image, data, "image", settings.max_pixels)
    frame = new_frame(label, "feedback", now_iso(), filename, inspection_id)
    async with services.frames.lock(product_id):
        product = await run_in_threadpool(existing_product, services.store, product_id)
        if add_to_references:
            # again: a request just before may have filled it
            check_room_for_a_reference(product, settings.max_references)
            product, kept = await add_reference(services, product, frame, decoded, data)
        else:
            was_good = inspection_id is not None and await run_in_threadpool(
                labelled_good, services.frames, product_id, inspection_id
            )
            kept = await score_and_keep(services, product, [frame], [decoded], {frame.frame_id: data})
            if label == "good" or was_good:  # a good frame joined or left the calibration set
                product = await recalibrated(services, product, kept)
    if inspection_id is not None:
        services.history.set_label(product_id, inspection_id, label)
    evaluation = evaluate(product_id, kept, product.threshold, product.version, product.calibration.score_scale)
    return {"product": product_view(product, services), "evaluation": evaluation}


def check_room_for_a_reference(product: Product, max_references: int) -> None:
    """Raises InvalidField (422) when the product has its maximum number of references already."""
    if product.refs.n_references >= max_references:
        raise InvalidField(f"{product.product_id!r} already has {max_references} references (DCPSFR_MAX_REFERENCES)")


def labelled_good(frames: FrameStore, product_id: str, inspection_id: str) -> bool:
    """Whether the inspection's current label is "good" (a relabel then takes it out of the calibration set)."""
    return any(f.inspection_id == inspection_id and f.label == "good" for f in frames.frames(product_id))


async def score_and_keep(
    services: Services,
    product: Product,
    frames: list[LabelledFrame],
    decoded: list[Image.Image],
    files: dict[str, bytes],
) -> list[LabelledFrame]:
    """Score new labelled frames against the product's current version and keep them with the stored ones
    (bounded by the frame store); returns every kept frame. Call under `services.frames.lock(product_id)`."""
    batch = await services.worker.result(services.worker.submit_predict(product, decoded))
    scored = [frame.scored(*one_value(p), product.version) for frame, p in zip(frames, batch.predictions, strict=True)]
    try:
        return await run_in_threadpool(services.frames.add, product.product_id, scored, files)
    except ProductMissing:  # deleted meanwhile
        raise unknown_product(product.product_id) from None
    except OSError as err:  # StoreError too: the lock stayed taken
        raise StorageFailed(f"the labelled frames of {product.product_id!r} could not be stored: {err}") from err


@router.get(
    "/{product_id}/evaluation",
    summary="i-AUROC, F1, false alarms and misses on operator-labelled frames",
    responses=error_responses(404, 422),
)
async def show_evaluation(product_id: ProductId, services: StoreServices) -> dict[str, Any]:
    """Computed from the feedback frames scored by the current reference version; frames scored by another version count
    as stale. 404 unknown product."""
    product = await run_in_threadpool(existing_product, services.store, product_id)
    frames = await run_in_threadpool(services.frames.frames, product_id)
    return evaluate(product_id, frames, product.threshold, product.version, product.calibration.score_scale)


@router.get(
    "/{product_id}/inspections",
    summary="Recent inspections of a product, newest first (in memory)",
    responses=error_responses(404, 422),
)
def recent_inspections(
    product_id: ProductId,
    services: StoreServices,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 20,
) -> dict[str, Any]:
    """From this replica's in-memory ring (lost on restart); 404 unknown product."""
    existing_product(services.store, product_id)
    recent = services.history.recent(product_id, limit)
    return {"product_id": product_id, "inspections": [inspection.as_json() for inspection in recent]}


# --- helpers of the routes above ------------------------------------------------------------------------------


async def read_again(upload: UploadFile) -> bytes:
    """The uploaded file's bytes (it was read once already to decode it)."""
    await upload.seek(0)
    return await upload.read()


def one_value(prediction: Prediction) -> tuple[float, float]:
    """(decision score, anomaly-map maximum) of one prediction."""
    return decision_score(prediction), float(prediction.anomaly_map.max())


def load_frames(services: Services, product_id: str) -> tuple[list[LabelledFrame], dict[str, Image.Image]]:
    """The stored labelled frames whose files decode, and their images (a broken file is logged and dropped)."""
    kept, images = [], {}
    for frame in services.frames.frames(product_id):
        try:
            data = services.frames.image_bytes(product_id, frame)
            images[frame.frame_id] = decode_image(data, frame.file_name, services.settings.max_pixels)
            kept.append(frame)
        except (OSError, ApiError) as err:
            log.warning("product %r: labelled frame %s dropped: %s", product_id, frame.frame_id, err)
    return kept, images


async def commit(services: Services, product_id: str, fitted: FittedProduct, expected: str | None) -> Product:
    """Store the new version unless the product moved since `expected` (its token) was read (409)."""
    try:
        commit = partial(services.store.commit, expected=expected)
        return await run_in_threadpool(commit, product_id, fitted.refs, fitted.calibration)
    except StoreConflict as err:
        raise Conflict(str(err)) from err
    except StoreError as err:
        raise StorageFailed(str(err)) from err


async def save_scored(
    services: Services,
    product: Product,
    frames: list[LabelledFrame],
    predictions: list[Prediction],
    new_files: dict[str, bytes],
) -> list[LabelledFrame]:
    """Frames with their scores against the product's (new) version, saved."""
    scored = [f.scored(*one_value(p), product.version) for f, p in zip(frames, predictions, strict=True)]
    try:
        return await run_in_threadpool(services.frames.save, product.product_id, scored, new_files)
    except OSError as err:
        raise StorageFailed(f"version {product.version} stored, but not its labelled frames: {err}") from err


async def recalibrated(services: Services, product: Product, frames: list[LabelledFrame]) -> Product:
    """The product with thresholds recomputed from its calibration set (references unchanged)."""
    new = recalibrate(product.calibration, calibration_values(frames, product.version), calibration_policy(services))
    content = json.dumps({"uid": product.uid, "calibration": new.to_dict()}).encode()  # for this version only
    try:
        write = partial(services.store.write_product_file, product.product_id, CALIBRATION_FILE, content)
        updated = await run_in_threadpool(write)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    if updated is None or updated.uid != product.uid:
        raise Conflict(f"the references of {product.product_id!r} changed during this request; send it again")
    return updated


async def feedback_frame(
    services: Services, product_id: str, inspection_id: str | None, image: UploadFile | None
) -> tuple[bytes, str | None]:
    """(bytes, filename) of the frame the feedback is about: a recent inspection's, or the uploaded one."""
    if image is not None:
        return await image.read(), image.filename
    inspection = services.history.find(product_id, inspection_id)
    if inspection is None:
        raise NotFound(
            f"inspection {inspection_id!r} is not among the last {services.history.size} inspections of "
            f"{product_id!r} on this replica; send the frame as 'image'"
        )
    if inspection.frame is None:
        raise InvalidField(f"inspection {inspection_id!r} was too large to keep; send the frame as 'image'")
    return inspection.frame, inspection.filename


async def add_reference(
    services: Services, product: Product, frame: LabelledFrame, image: Image.Image, data: bytes
) -> tuple[Product, list[LabelledFrame]]:
    """A new version with `image` as one more reference; the labelled frames scored against it."""
    settings = services.settings
    stored, stored_images = await run_in_threadpool(load_frames, services, product.product_id)
    frames = bounded(relabelled(stored, [frame]), settings.calibration_max_frames, settings.feedback_max_frames)
    images = {**stored_images, frame.frame_id: image}
    call = partial(
        extend_and_calibrate,
        product_refs=product.refs,
        calibration=product.calibration,
        images=[image],
        frames=[images[f.frame_id] for f in frames],
        good=[f.label == "good" for f in frames],
        policy=calibration_policy(services),
    )
    fitted: FittedProduct = await services.worker.result(services.worker.submit_call(call, "fit"))
    updated = await commit(services, product.product_id, fitted, product.uid)
    services.metrics.products.set(len(services.store))
    kept = await save_scored(services, updated, frames, fitted.frame_predictions, {frame.frame_id: data})
    return updated, kept


@router.get("", summary="List products")
def list_products(services: StoreServices) -> dict[str, Any]:
    """Every stored product with its version, thresholds and
    calibration, sorted by id; answers while the model loads."""
    try:
        products = services.store.all()
    except StoreUnavailable as err:  # the folder went away since the dependency looked
        raise Unavailable(str(err)) from None
    return {"products": [product_view(p, services) for p in products]}


@router.get("/{product_id}", summary="Show one product", responses=error_responses(404, 422))
def show_product(product_id: ProductId, services: StoreServices) -> dict[str, Any]:
    """The product's version, thresholds, calibration, rules and warnings; 404 unknown product."""
    return product_view(existing_product(services.store, product_id), services)


@router.delete(
    "/{product_id}",
    status_code=204,
    summary="Remove a product and its stored references",
    responses=error_responses(404, 422, 507),
)
def delete_product(product_id: ProductId, services: StoreServices) -> Response:
    """Deletes every version, the labelled frames and the recent
    inspections; 404 unknown product, 507 when the data dir fails."""
    try:
        deleted = services.store.delete(product_id)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    if not deleted:
        raise unknown_product(product_id)
    services.history.forget(product_id)
    services.metrics.products.set(len(services.store))
    return Response(status_code=204)


@router.put(
    "/{product_id}/threshold",
    summary="Override the calibrated thresholds",
    responses=error_responses(400, 404, 413, 422, 507),
)
def set_threshold(product_id: ProductId, update: ThresholdUpdate, services: StoreServices) -> dict[str, Any]:
    """Sets the manual image threshold; a pixel_threshold left out (or null) goes back to its calibrated value. 404
    unknown product, 422 a value out of range, 507 when the data dir fails."""
    try:
        product = services.store.set_thresholds(product_id, update.threshold, update.pixel_threshold)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    if product is None:
        raise unknown_product(product_id)
    return product_view(product, services)
