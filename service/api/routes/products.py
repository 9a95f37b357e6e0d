"""Products: upload references, list, show, delete, override the thresholds; the calibration set, operator feedback,
its evaluation and the recent inspections. List, show, delete and the threshold override need no model: they
answer while it loads or when it is unavailable. The work is in service.products.workflows."""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.api.dependencies import AuditDep, FormBool, ProductId, ReadyServices, Services, StoreServices
from service.api.errors import error_responses
from service.api.openapi import max_files, refused
from service.api.routes.uploads import UploadRoute, read_uploads, single_upload
from service.api.schemas import (
    CalibrationAdded,
    Evaluation,
    FeedbackAnswer,
    InspectionList,
    ProductList,
    ProductUploaded,
    ProductView,
    RecentInspection,
    RetentionUpdate,
    RetentionView,
    ReviewPolicyUpdate,
    ReviewPolicyView,
    duplicates_warning,
    product_mode,
)
from service.errors import InvalidInput
from service.products.store import Product
from service.products.workflows import unknown_product
from service.records.archive import RetentionPolicy
from service.records.review import ReviewPolicy
from service.records.store import RecordFilter, records_call

router = APIRouter(
    prefix="/products", tags=["products"], responses=error_responses(401, 403, 503), route_class=UploadRoute
)

OLD_IMAGE_FIELD = "send the frame in the multipart field 'images' (one file), as every route takes images"
# what give_feedback answers 422 to, in its body's schema (service.api.openapi moves it into the body model)
FEEDBACK_RULES = {
    "oneOf": [  # one frame: a recent inspection's, or a file (an empty value is no value in a multipart body)
        {"required": ["inspection_id"], "properties": {"inspection_id": {"minLength": 1}, "images": {"maxItems": 0}}},
        {"required": ["images"], "properties": {"images": {"minItems": 1}, "inspection_id": {"maxLength": 0}}},
    ],
    "anyOf": [  # only a good frame joins the references
        {"properties": {"add_to_references": {"const": False}}},
        {"properties": {"label": {"const": "good"}}},
    ],
}
FORCE_DESCRIPTION = "apply a threshold change larger than x1.5 (the 409 asks for it); never one above the scale"
MAX_THRESHOLD = 1e30  # within float32, which the maps are compared in


class ThresholdUpdate(BaseModel):
    """Replaces both overrides: `threshold` is required; `pixel_threshold` left out (or null) goes back to its
    calibrated value."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(
        ge=-MAX_THRESHOLD,
        le=MAX_THRESHOLD,
        allow_inf_nan=False,
        strict=True,  # a number: JSON true or "0.5" is refused
        description="image score above it -> anomalous",
    )
    pixel_threshold: float | None = Field(
        None,
        strict=True,
        ge=-MAX_THRESHOLD,
        le=MAX_THRESHOLD,
        allow_inf_nan=False,
        description="anomaly-map value above it -> in the mask; null = calibrated",
    )


def audited_state(product: Product | None) -> dict[str, Any] | None:
    """What the audit log keeps of a product before or after a change (small: never references or frames)."""
    if product is None:
        return None
    return {
        "version": product.version,
        "threshold": product.threshold,
        "pixel_threshold": product.pixel_threshold,
        "manual_threshold": product.threshold_override,
        "manual_pixel_threshold": product.pixel_threshold_override,
        "rules_version": product.rules_version,
    }


def view(product: Product, services: Services) -> ProductView:
    """The product as the routes answer it, with the loaded model's mode (null while it loads)."""
    return ProductView.of(product, product_mode(services.worker.detector))


def view_with_duplicates(product: Product, services: Services, ignored: int) -> dict[str, Any]:
    """The product's view as fields, its warnings saying how many duplicate frames the request left out."""
    fields = view(product, services).model_dump()
    if ignored:
        fields["warnings"] = [*fields["warnings"], duplicates_warning(ignored)]
    return fields


@router.post(
    "/{product_id}/references",
    status_code=201,
    summary="Fit, calibrate and store a product's references",
    responses=error_responses(400, 409, 413, 415, 422, 429, 504, 507),
)
async def upload_references(
    product_id: ProductId,
    services: ReadyServices,
    audit: AuditDep,
    images: Annotated[
        list[UploadFile], File(description="images of good parts", json_schema_extra=max_files("max_references"))
    ],
    calibration: Annotated[
        list[UploadFile] | None,
        File(
            description="optional extra good frames: the calibration set, not references",
            json_schema_extra=max_files("calibration_max_frames"),
        ),
    ] = None,
    bit_depth: Annotated[
        int | None,
        Form(ge=8, le=16, description="bits of real data in 16-bit frames without sBIT; default: from the references"),
    ] = None,
) -> ProductUploaded:
    """The product's stored calibration and labelled frames are kept and scored against the new references."""
    before = audited_state(await run_in_threadpool(services.store.get, product_id))
    references = await read_uploads(images)
    uploaded = await services.workflows.upload_references(
        product_id, references, await read_uploads(calibration or [], "calibration"), bit_depth
    )
    after = {**audited_state(uploaded.product), "images": len(references)}
    await audit("references.upload", product_id, before, after)
    answer = view_with_duplicates(uploaded.product, services, uploaded.duplicates_ignored)
    return ProductUploaded(**answer, timings_ms=uploaded.timings_ms, duplicates_ignored=uploaded.duplicates_ignored)


@router.post(
    "/{product_id}/calibration",
    summary="Add good frames to the calibration set; thresholds recomputed",
    responses=error_responses(400, 404, 409, 413, 415, 422, 429, 504, 507),
)
async def add_calibration_frames(
    product_id: ProductId,
    services: ReadyServices,
    audit: AuditDep,
    images: Annotated[
        list[UploadFile],
        File(
            description="good frames of this product, as the camera takes them",
            json_schema_extra=max_files("calibration_max_frames"),
        ),
    ],
    force: Annotated[FormBool, Form(description=FORCE_DESCRIPTION)] = False,
) -> CalibrationAdded:
    """References unchanged (no refit, no backbone pass for them): only the new frames are scored. 409 when the new
    thresholds would reject nothing (at or above the scale's maximum), or, with `confirmation`, when the threshold in
    force would move by more than x1.5 (either way) and force is not true; nothing is stored then."""
    before = audited_state(await run_in_threadpool(services.store.get, product_id))
    frames = await read_uploads(images)
    added = await services.workflows.add_calibration_frames(product_id, frames, force)
    after = {**audited_state(added.product), "frames": len(frames), "duplicates_ignored": added.duplicates_ignored}
    await audit("calibration.add", product_id, before, after)
    answer = view_with_duplicates(added.product, services, added.duplicates_ignored)
    return CalibrationAdded(**answer, duplicates_ignored=added.duplicates_ignored)


@router.post(
    "/{product_id}/feedback",
    summary="Label a frame good or defect (an inspection id or an image)",
    responses=error_responses(400, 404, 409, 413, 415, 422, 429, 504, 507),
    openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": FEEDBACK_RULES}}}},
)
async def give_feedback(
    product_id: ProductId,
    services: ReadyServices,
    audit: AuditDep,
    label: Annotated[Literal["good", "defect"], Form(description="the operator's verdict")],
    inspection_id: Annotated[str | None, Form(description="a recent inspection of this product")] = None,
    images: Annotated[
        list[UploadFile] | None,
        File(description="or the frame itself: one file, instead of inspection_id", json_schema_extra=max_files(1)),
    ] = None,
    image: Annotated[UploadFile | None, File(json_schema_extra=refused(OLD_IMAGE_FIELD))] = None,  # the old name
    add_to_references: Annotated[
        FormBool, Form(description="good frames only: also add it to the references (a new version)")
    ] = False,
    force: Annotated[FormBool, Form(description=FORCE_DESCRIPTION)] = False,
) -> FeedbackAnswer:
    """A good frame joins the calibration set (thresholds recomputed); every labelled frame is kept (bounded)
    for GET /products/{id}/evaluation. A label by inspection_id is stored on the record with who (the API key's
    name) and when, and takes the inspection out of the review queue. 422 unless exactly one of inspection_id and
    one file in images; 409 when the new thresholds would reject nothing, or, with `confirmation`, when the label
    would move the threshold in force by more than x1.5 (either way) and force is not true; nothing is stored
    then."""
    if image is not None:
        raise InvalidInput(OLD_IMAGE_FIELD)
    frame = await single_upload(images) if images else None
    before = audited_state(await run_in_threadpool(services.store.get, product_id))
    labelled = await services.workflows.give_feedback(
        product_id, label, inspection_id, frame, add_to_references, force, author=audit.actor
    )
    given = {"label": label, "inspection_id": inspection_id, "add_to_references": add_to_references}
    await audit("feedback", product_id, before, {**audited_state(labelled.product), **given})
    ignored = labelled.duplicates_ignored
    return FeedbackAnswer(
        product=ProductView(**view_with_duplicates(labelled.product, services, ignored)),
        evaluation=Evaluation(**labelled.evaluation),
        duplicates_ignored=ignored,
    )


@router.get(
    "/{product_id}/evaluation",
    summary="i-AUROC, F1, false alarms and misses on operator-labelled frames",
    responses=error_responses(404, 422),
)
async def show_evaluation(product_id: ProductId, services: StoreServices) -> Evaluation:
    """Computed from the feedback frames scored by the current reference version; frames scored by another version count
    as stale. 404 unknown product."""
    return Evaluation(**await services.workflows.evaluation(product_id))


@router.get(
    "/{product_id}/inspections",
    summary="Recent inspections of a product, newest first",
    responses=error_responses(404, 422),
)
async def recent_inspections(
    product_id: ProductId,
    services: StoreServices,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 20,
) -> InspectionList:
    """From the records (every replica's, this one's spooled ones first); 404 unknown product, 503 the records
    database does not answer."""
    await services.workflows.existing(product_id)
    recorder = services.recorder
    await run_in_threadpool(recorder.flush)
    page = partial(recorder.store.page, RecordFilter(product_id), limit, thumbnails=True)
    recent, _ = await run_in_threadpool(records_call, page)
    return InspectionList(product_id=product_id, inspections=[RecentInspection.of(r) for r in recent])


@router.get(
    "/{product_id}/retention",
    summary="Which frames of a product the archive keeps",
    responses=error_responses(404, 422),
)
async def show_retention(product_id: ProductId, services: StoreServices) -> RetentionView:
    """The product's own policy, else the DCPSFR_ARCHIVE_* settings' (`default`: true); 404 unknown product."""
    await services.workflows.existing(product_id)
    recorder = services.recorder
    own = (await run_in_threadpool(records_call, recorder.store.policies)).get(product_id)
    policy = own or recorder.settings.default_policy
    return RetentionView(product_id=product_id, default=own is None, **asdict(policy))


@router.put(
    "/{product_id}/retention",
    summary="Set which frames of a product the archive keeps",
    responses=error_responses(400, 404, 413, 422),
)
async def set_retention(
    product_id: ProductId, update: RetentionUpdate, services: StoreServices, audit: AuditDep
) -> RetentionView:
    """Applies to frames inspected from now on (this replica at once, the others within 10 s) and to the archive's
    next pruning (`days`); 404 unknown product, 503 the records database does not answer."""
    await services.workflows.existing(product_id)
    policy = RetentionPolicy(update.keep_ng, update.keep_ok_every, update.days)
    recorder = services.recorder
    own = (await run_in_threadpool(records_call, recorder.store.policies)).get(product_id)
    await run_in_threadpool(records_call, recorder.set_policy, product_id, policy)
    before = {**asdict(own or recorder.settings.default_policy), "default": own is None}
    await audit("retention.set", product_id, before, {**asdict(policy), "default": False})
    return RetentionView(product_id=product_id, default=False, **asdict(policy))


@router.get(
    "/{product_id}/review-policy",
    summary="Which inspections of a product wait for a person's verdict",
    responses=error_responses(404, 422),
)
async def show_review_policy(product_id: ProductId, services: StoreServices) -> ReviewPolicyView:
    """The product's own policy, else the DCPSFR_REVIEW_* settings' (`default`: true); 404 unknown product."""
    await services.workflows.existing(product_id)
    recorder = services.recorder
    own = (await run_in_threadpool(records_call, recorder.store.review_policies)).get(product_id)
    return ReviewPolicyView(
        product_id=product_id, default=own is None, **asdict(own or recorder.settings.default_review)
    )


@router.put(
    "/{product_id}/review-policy",
    summary="Set which inspections of a product wait for a person's verdict",
    responses=error_responses(400, 404, 413, 422),
)
async def set_review_policy(
    product_id: ProductId, update: ReviewPolicyUpdate, services: StoreServices, audit: AuditDep
) -> ReviewPolicyView:
    """Applies to inspections from now on (this replica at once, the others within 10 s): a record already made
    keeps its decision. 404 unknown product, 503 the records database does not answer."""
    await services.workflows.existing(product_id)
    policy = ReviewPolicy(update.band, update.all_ng)
    recorder = services.recorder
    own = (await run_in_threadpool(records_call, recorder.store.review_policies)).get(product_id)
    await run_in_threadpool(records_call, recorder.set_review_policy, product_id, policy)
    before = {**asdict(own or recorder.settings.default_review), "default": own is None}
    await audit("review_policy.set", product_id, before, {**asdict(policy), "default": False})
    return ReviewPolicyView(product_id=product_id, default=False, **asdict(policy))


@router.get("", summary="List products")
async def list_products(services: StoreServices) -> ProductList:
    """Every stored product with its version, thresholds and calibration, sorted by id; answers while the model
    loads."""
    products = await run_in_threadpool(services.store.all)
    return ProductList(products=[view(p, services) for p in products])


@router.get("/{product_id}", summary="Show one product", responses=error_responses(404, 422))
async def show_product(product_id: ProductId, services: StoreServices) -> ProductView:
    """The product's version, thresholds, calibration, rules and warnings; 404 unknown product."""
    return view(await services.workflows.existing(product_id), services)


@router.delete(
    "/{product_id}",
    status_code=204,
    summary="Remove a product and its stored references",
    responses={204: {"description": "deleted"}, **error_responses(404, 422, 507)},
    response_class=Response,
)
async def delete_product(product_id: ProductId, services: StoreServices, audit: AuditDep) -> Response:
    """Deletes every version and the labelled frames (its inspection records stay: they are the record); 404 unknown
    product, 507 when the data dir fails."""
    before = audited_state(await run_in_threadpool(services.store.get, product_id))
    if not await run_in_threadpool(services.store.delete, product_id):
        raise unknown_product(product_id)
    services.metrics.products.set(len(services.store))
    await audit("product.delete", product_id, before, None)
    return Response(status_code=204)


@router.put(
    "/{product_id}/threshold",
    summary="Override the calibrated thresholds",
    responses=error_responses(400, 404, 409, 413, 422, 507),
)
async def set_threshold(
    product_id: ProductId, update: ThresholdUpdate, services: StoreServices, audit: AuditDep
) -> ProductView:
    """Sets the manual image threshold; a pixel_threshold left out (or null) goes back to its calibrated value. 404
    unknown product, 409 a value at or above the maximum of the product's scale (distance: 2, where nothing can be
    rejected), 422 a value out of range, 507 when the data dir fails. A threshold below every normal score is
    applied, with a warning."""
    before = audited_state(await run_in_threadpool(services.store.get, product_id))
    product = await services.workflows.set_thresholds(product_id, update.threshold, update.pixel_threshold)
    await audit("threshold.set", product_id, before, audited_state(product))
    return view(product, services)
