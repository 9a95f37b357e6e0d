"""Response models: one shape per resource, the OpenAPI schema and the body built by the same model."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from service.decisions.results import InspectionResult, PartTag, mode_label
from service.decisions.rules import AcceptanceRules
from service.decisions.thresholds import SCORE_RANGE, Calibration, unusable_warnings
from service.imaging.formats import PRODUCT_ID
from service.products.store import Product

ProductIdText = Annotated[str, Field(pattern=PRODUCT_ID.pattern, description="1-64 letters, digits, '.', '_' or '-'")]


def _unset(value: object) -> bool:
    return value is None


class Health(BaseModel):
    """GET /healthz."""

    status: Literal["ok"] = "ok"


class DownloadProgress(BaseModel):
    """The start-up fetch of the weights (`--fetch-weights`) while it runs: the files and bytes it downloads."""

    files_done: int = Field(description="files downloaded and verified")
    files_total: int = Field(description="files to download (present ones do not count)")
    bytes_done: int
    bytes_total: int = Field(description="approximate until the hub tells each file's size")
    file: str = Field(description="the file downloading now (empty once done)")


class Readiness(BaseModel):
    """GET /readyz: only `ready` without a valid API key (when keys are configured)."""

    ready: bool
    status: Literal["ready", "loading", "draining", "unavailable"] | None = Field(None, exclude_if=_unset)
    detail: str | None = Field(None, exclude_if=_unset, description="why it is not ready")
    config: str | None = Field(None, exclude_if=_unset, description="the detector config")
    mode: str | None = Field(None, exclude_if=_unset, description='"full" or "training-free" (random weights?)')
    device: str | None = Field(None, exclude_if=_unset)
    products: int | None = Field(None, exclude_if=_unset, description="products in memory")
    download: DownloadProgress | None = Field(
        None, exclude_if=_unset, description="while loading: the start-up fetch of the weights, when one runs"
    )


class ProductView(BaseModel):
    """A product as every product route answers it: its version, thresholds and their source, calibration,
    warnings, rules and config."""

    product_id: ProductIdText
    version: int = Field(description="the reference version; a new upload makes a new one")
    generation: int = Field(description="counts every change of the product (version, thresholds, files)")
    n_references: int
    bank_size: int = Field(description="patch tokens in the memory bank")
    threshold: float = Field(description="image threshold in force, on `score_scale`")
    pixel_threshold: float = Field(description="anomaly-map value above which a pixel is in the mask")
    threshold_source: Literal["calibrated", "manual"]
    pixel_threshold_source: Literal["calibrated", "manual"]
    calibration: Calibration
    score_scale: Literal["logit", "distance"]
    threshold_method: str = Field(description='"max-margin", "quantile" or "manual"')
    n_calibration: int
    n_pixel_calibration: int
    provisional: bool = Field(description="the calibrated threshold rests on too few normal frames")
    threshold_usable: bool = Field(
        description="false when a threshold in force rejects nothing (at or above the scale's maximum) or every "
        "good part (below every normal score); the warnings say which"
    )
    score_max: float | None = Field(description="the highest value on `score_scale` (distance: 2); null: unbounded")
    bit_depth: int | None = Field(
        description="bits of real data in high-bit grey frames (their sBIT first): null for 8-bit products"
    )
    warnings: list[str]
    mm_per_pixel: float | None
    rules: AcceptanceRules | None
    rules_version: int
    config: str = Field(description="the detector config the references were fitted with")
    created_at: str
    mode: str | None = Field(description="the loaded model's mode; null while it loads or is unavailable")

    @classmethod
    def of(cls, product: Product, mode: str | None) -> ProductView:
        """The view of a stored product; `mode` is the loaded detector's (None while it is not loaded)."""
        calibration = product.calibration
        manual = product.threshold_override is not None
        unusable = unusable_warnings(product.threshold, product.pixel_threshold, calibration)
        highest = SCORE_RANGE[calibration.score_scale][1]
        return cls(
            product_id=product.product_id,
            version=product.version,
            generation=product.generation,
            n_references=product.refs.n_references,
            bank_size=product.refs.bank_size,
            threshold=product.threshold,
            pixel_threshold=product.pixel_threshold,
            threshold_source="manual" if manual else "calibrated",
            pixel_threshold_source="calibrated" if product.pixel_threshold_override is None else "manual",
            calibration=calibration,
            score_scale=calibration.score_scale,
            threshold_method="manual" if manual else calibration.threshold_method,
            n_calibration=calibration.n_calibration,
            n_pixel_calibration=calibration.n_pixel_calibration,
            provisional=calibration.provisional and not manual,
            threshold_usable=not unusable,
            score_max=highest if highest < float("inf") else None,
            bit_depth=product.refs.bit_depth,
            warnings=[*unusable, *product.warnings],
            mm_per_pixel=None if product.rules is None else product.rules.mm_per_pixel,
            rules=product.rules,
            rules_version=product.rules_version,
            config=product.refs.config_name,
            created_at=product.created_at,
            mode=mode,
        )


DUPLICATES_IGNORED = Field(
    description="frames left out because their decoded pixels were already labelled the same (stored, or earlier "
    "in the request): each frame counts once; a warning says so"
)


def duplicates_warning(ignored: int) -> str:
    """The warning of an answer that left `ignored` duplicate frames out."""
    frames = "frame was" if ignored == 1 else "frames were"
    return f"{ignored} duplicate {frames} ignored: the same pixels already carry that label, and count once"


class ProductUploaded(ProductView):
    """POST /products/{id}/references: the new version, and what storing it took."""

    timings_ms: dict[str, float] = Field(description="decode, fit, calibrate, store")
    duplicates_ignored: int = DUPLICATES_IGNORED


class CalibrationAdded(ProductView):
    """POST /products/{id}/calibration: the product with its thresholds recomputed."""

    duplicates_ignored: int = DUPLICATES_IGNORED


class ProductList(BaseModel):
    """GET /products: every stored product, sorted by id."""

    products: list[ProductView]


class RulesView(BaseModel):
    """A product's acceptance rules (null: the threshold rule decides) and how often they changed."""

    product_id: ProductIdText
    rules: AcceptanceRules | None
    rules_version: int

    @classmethod
    def of(cls, product: Product) -> RulesView:
        """The rules of a stored product."""
        return cls(product_id=product.product_id, rules=product.rules, rules_version=product.rules_version)


class EvaluationSample(BaseModel):
    """One operator-labelled frame scored by the current references."""

    score: float
    label: Literal["good", "defect"]
    inspection_id: str | None
    time: str


class Evaluation(BaseModel):
    """GET /products/{id}/evaluation: the threshold on the operator-labelled frames."""

    product_id: ProductIdText
    threshold: float
    score_scale: str
    reference_version: int
    n_good: int
    n_defect: int
    i_auroc: float | None = Field(description="null until both good and defect frames are labelled")
    f1: float | None = Field(description="F1 at the threshold; null until a defect is labelled")
    false_alarms: int
    misses: int
    n_stale: int = Field(description="labelled frames scored by another reference version (left out)")
    samples: list[EvaluationSample]


class FeedbackAnswer(BaseModel):
    """POST /products/{id}/feedback: the product after the label, and the evaluation."""

    product: ProductView
    evaluation: Evaluation
    duplicates_ignored: int = DUPLICATES_IGNORED


class RecentInspection(BaseModel):
    """One entry of GET /products/{id}/inspections (from the records: every replica's)."""

    inspection_id: str
    time: str = Field(description="ISO 8601 UTC")
    score: float
    score_scale: str
    threshold: float
    anomalous: bool
    filename: str | None
    width: int
    height: int
    thumbnail: str = Field(description="JPEG data URL, 160 px on the longer side")
    label: Literal["good", "defect"] | None = Field(description="the operator's label, if any")
    reference_version: int

    @classmethod
    def of(cls, record: dict[str, Any]) -> RecentInspection:
        """The view of one record."""
        return cls(
            inspection_id=record["inspection_id"],
            time=utc(record["time"]).isoformat(),
            score=record["score"],
            score_scale=record["score_scale"],
            threshold=record["threshold"],
            anomalous=record["anomalous"],
            filename=record["filename"],
            width=record["width"],
            height=record["height"],
            thumbnail=record["thumbnail"] or "",
            label=record["label"],
            reference_version=record["reference_version"],
        )


def utc(time: datetime) -> datetime:
    """A stored (zone-less UTC) time as an aware one."""
    return time.replace(tzinfo=UTC)


class InspectionRecord(BaseModel):
    """One inspected frame as the records keep it: GET /inspections, GET /inspections/{id}."""

    inspection_id: str
    time: datetime = Field(description="when the verdict was made (UTC)")
    product_id: str
    reference_version: int = Field(description="the product version (references) that scored the frame")
    threshold: float
    pixel_threshold: float
    threshold_source: Literal["calibrated", "manual"]
    rules_version: int = Field(description="counts the product's rule changes (0: never set)")
    rules: dict[str, Any] | None = Field(description="the acceptance rules in force, null without rules")
    model_config_name: str = Field(serialization_alias="model_config", description="the detector config")
    mode: str
    weights_checksum: str = Field(description="the references' feature fingerprint (backbones, weights, sizes)")
    score: float
    score_scale: str
    anomalous: bool = Field(description="the verdict")
    verdict: Literal["OK", "NG"]
    rule: str | None = Field(description="the rule that rejected the part, null when it passed")
    rules_fired: list[str]
    regions: list[RegionView]
    n_regions: int
    timings_ms: dict[str, float] = Field(description="decode, queue, predict, the model's stages, encode")
    total_ms: float = Field(description="decode + queue + predict + encode")
    warnings: list[str]
    filename: str | None
    width: int
    height: int
    part_id: str | None
    station: str | None
    camera: str | None
    view: str | None = Field(description="which view of a part seen several ways (the station's view name)")
    trigger_time: datetime | None
    latency_ms: float | None = Field(description="trigger_time to verdict (the station's clock against the service's)")
    frame_sha256: str | None = Field(description="the archived frame's hash, null when the policy did not keep it")
    frame_kept: bool = Field(description="whether GET /inspections/{id}/frame returns the frame")
    label: Literal["good", "defect"] | None = Field(description="the latest operator label, if any")
    review: Literal["pending", "reviewed"] | None = Field(
        None, description="pending: waits in the review queue; reviewed: labelled since; null: never queued"
    )
    reviewed_by: str | None = Field(None, description="who gave the latest label (the API key's name)")
    reviewed_at: datetime | None = Field(None, description="when the latest label was given (UTC)")
    replica: str = Field(description="the host that answered")

    model_config = ConfigDict(protected_namespaces=(), serialize_by_alias=True)

    @classmethod
    def of(cls, record: dict[str, Any]) -> InspectionRecord:
        """The view of one record row (times as UTC)."""
        fields = {k: v for k, v in record.items() if k in cls.model_fields and k != "model_config_name"}
        fields["time"] = utc(record["time"])
        fields["trigger_time"] = utc(record["trigger_time"]) if record["trigger_time"] is not None else None
        fields["reviewed_at"] = utc(record["reviewed_at"]) if record.get("reviewed_at") is not None else None
        return cls(
            **fields,
            model_config_name=record["model_config"],
            verdict="NG" if record["anomalous"] else "OK",
        )


class InspectionPage(BaseModel):
    """GET /inspections: records newest first, and the cursor of the next page."""

    inspections: list[InspectionRecord]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null after the last")


class AuditEntry(BaseModel):
    """One change on the audit log: who (the API key's name), when, what, to which product, before and after."""

    audit_id: int
    time: datetime = Field(description="when the change was made (UTC)")
    actor: str = Field(description='the API key\'s name; "anonymous" when authentication is off')
    action: str = Field(description="e.g. threshold.set, rules.set, references.upload, product.delete")
    product_id: str
    before: Any = Field(description="small values before the change (thresholds, rules, version); null: none")
    after: Any = Field(description="the same values after it; null: none (a deleted product)")

    @classmethod
    def of(cls, row: dict[str, Any]) -> AuditEntry:
        """An audit table row as shown."""
        return cls(**{**row, "time": utc(row["time"])})


class AuditPage(BaseModel):
    """GET /audit: changes newest first, and the cursor of the next page."""

    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null after the last")


def _json_integer(value: object) -> object:
    """A JSON integer as JSON Schema reads it: 7 or 7.0, never true or "7" (pydantic alone takes both)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]


class RetentionUpdate(BaseModel):
    """PUT /products/{id}/retention: which frames of the product the archive keeps, and for how long."""

    model_config = ConfigDict(extra="forbid")
    keep_ng: StrictBool = Field(description="keep every anomalous (NG) frame")
    keep_ok_every: JsonInteger = Field(ge=0, le=1_000_000, description="keep every Nth OK frame (0: none, 1: all)")
    days: JsonInteger = Field(ge=1, le=36500, description="keep frames this many days")


class RetentionView(RetentionUpdate):
    """A product's retention policy, and whether it is the settings' default."""

    product_id: ProductIdText
    default: bool = Field(description="true: the DCPSFR_ARCHIVE_* settings apply (no policy set for the product)")


class ReviewPolicyUpdate(BaseModel):
    """PUT /products/{id}/review-policy: which of the product's inspections wait for a person's verdict."""

    model_config = ConfigDict(extra="forbid")
    band: float = Field(
        ge=0.0,
        le=1.0,
        strict=True,
        allow_inf_nan=False,
        description="scores within ±band × |threshold| of the threshold in force (0.1: ±10 %; 0: only on it)",
    )
    all_ng: StrictBool = Field(description="every anomalous (NG) inspection too")


class ReviewPolicyView(ReviewPolicyUpdate):
    """A product's review policy, and whether it is the default."""

    product_id: ProductIdText
    default: bool = Field(description="true: the DCPSFR_REVIEW_* settings apply (no policy set for the product)")


class ReviewItem(BaseModel):
    """One inspection waiting in the review queue."""

    inspection_id: str
    time: datetime = Field(description="when the verdict was made (UTC)")
    product_id: str
    reference_version: int
    score: float
    score_scale: str
    threshold: float = Field(description="the threshold in force then")
    threshold_source: Literal["calibrated", "manual"]
    anomalous: bool
    verdict: Literal["OK", "NG"]
    rule: str | None
    part_id: str | None
    station: str | None
    camera: str | None
    filename: str | None
    thumbnail: str = Field(description="JPEG data URL, 160 px on the longer side; empty when none was made")
    frame_kept: bool = Field(description="whether the frame is archived (feedback by inspection_id needs it)")

    @classmethod
    def of(cls, record: dict[str, Any]) -> ReviewItem:
        """The queue's view of one record."""
        fields = {name: record[name] for name in cls.model_fields if name in record}
        verdict = "NG" if record["anomalous"] else "OK"
        return cls(
            **{**fields, "time": utc(record["time"]), "verdict": verdict, "thumbnail": record["thumbnail"] or ""}
        )


class ReviewQueue(BaseModel):
    """GET /inspections/review-queue: inspections waiting for a verdict, oldest first, and the cursor of the next
    page."""

    pending: int = Field(description="how many wait in all (with the product filter)")
    items: list[ReviewItem]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null after the last")


class InspectionList(BaseModel):
    """GET /products/{id}/inspections: recent inspections, newest first."""

    product_id: ProductIdText
    inspections: list[RecentInspection]


class RegionView(BaseModel):
    """One defect region: a connected component of the mask, measured on the anomaly map (pixel indices)."""

    id: int = Field(description="1 for the region with the highest map value, then down")
    bbox: tuple[int, int, int, int] = Field(description="x0, y0, x1, y1 (x1, y1 exclusive)")
    centroid: tuple[float, float] = Field(description="x, y")
    area_px: int
    max_value: float
    mean_value: float
    in_reject_zone: bool
    area_mm2: float | None = Field(None, exclude_if=_unset, description="with the product's mm_per_pixel")
    length_mm: float | None = Field(None, exclude_if=_unset, description="the box's longer side")
    width_mm: float | None = Field(None, exclude_if=_unset, description="the box's shorter side")


class InspectedImage(BaseModel):
    """One image's answer in POST /inspect."""

    inspection_id: str = Field(description="unique id: GET /products/{id}/inspections, POST .../feedback")
    filename: str | None = Field(description="the uploaded file's name")
    score: float = Field(description="image anomaly score on `score_scale`; higher = more anomalous")
    score_scale: Literal["logit", "distance"] = Field(description="logit (full mode) or distance (training-free)")
    anomalous: bool = Field(description="the verdict")
    threshold: float = Field(description="the product's image threshold, on the score's scale")
    pixel_threshold: float = Field(description="anomaly-map value above which a pixel is in the mask")
    width: int = Field(description="the image's width in pixels (the mask's and map's too)")
    height: int = Field(description="the image's height in pixels")
    mask_png: str | None = Field(
        description="base64 8-bit PNG: 255 where the map is above pixel_threshold, else 0; null with outputs=verdict"
    )
    anomaly_map_png: str | None = Field(
        description="base64 8-bit heat-map PNG (128 = pixel_threshold); null with outputs=verdict"
    )
    mode: str = Field(description='"full" or "training-free", with " (random weights)" when they are random')
    timings_ms: dict[str, float] = Field(description="decode, queue, predict, the model's stages, encode")
    regions: list[RegionView] = Field(description="the regions with the highest map values, at most the limit")
    n_regions: int = Field(description="all regions, listed or not")
    regions_truncated: bool
    rule: str | None = Field(description='the acceptance rule that rejected the part ("threshold" without rules)')
    rules_fired: list[str]
    warnings: list[str] = Field(
        description="what the line should know about this frame, e.g. another aspect or bit depth than the "
        "product's references (a camera ROI, binning or pixel format change); empty when nothing"
    )
    part_id: str | None = Field(None, description="the request's `part_id`, echoed")
    station: str | None = Field(None, description="the request's `station`, echoed")
    camera: str | None = Field(None, description="the request's `camera`, echoed")
    view: str | None = Field(None, description="the request's `view` (of a part seen in several views), echoed")
    trigger_time: datetime | None = Field(None, description="the request's `trigger_time`, echoed")

    @classmethod
    def of(cls, result: InspectionResult, filename: str | None, part: PartTag | None = None) -> InspectedImage:
        """The answer for one result (PNGs in base64; None where one was not asked for), tagged with the request's
        part fields."""
        part = part or PartTag()
        return cls(
            inspection_id=result.inspection_id,
            filename=filename,
            score=result.score,
            score_scale=result.score_scale,
            anomalous=result.anomalous,
            threshold=result.threshold,
            pixel_threshold=result.pixel_threshold,
            width=result.width,
            height=result.height,
            mask_png=base64_text(result.mask_png),
            anomaly_map_png=base64_text(result.anomaly_map_png),
            mode=result.mode,
            timings_ms=result.timings_ms,
            regions=[RegionView(**region) for region in result.regions],
            n_regions=result.n_regions,
            regions_truncated=result.regions_truncated,
            rule=result.rule,
            rules_fired=list(result.rules_fired),
            warnings=list(result.warnings),
            part_id=part.part_id,
            station=part.station,
            camera=part.camera,
            view=part.view,
            trigger_time=part.trigger_time,
        )


def base64_text(data: bytes | None) -> str | None:
    """Bytes as base64 text; None stays None."""
    return None if data is None else base64.b64encode(data).decode("ascii")


class InspectResponse(BaseModel):
    """POST /inspect: one result per uploaded image, in order."""

    product_id: ProductIdText
    reference_version: int = Field(description="the product version the images were compared with")
    results: list[InspectedImage]


def product_mode(detector: Any) -> str | None:
    """The mode label of the loaded detector, None while it loads or when it cannot."""
    return None if detector is None else mode_label(detector.mode, detector.random_weights)


class YieldBucket(BaseModel):
    """One bucket of GET /reports/yield: an hour, a shift on a day, a product, or the range's total."""

    key: str = Field(description='the hour\'s start (ISO 8601, local), "2026-03-01 night", the product id, or "total"')
    start: datetime | None = Field(description="when the hour or shift starts, in the report's time zone")
    end: datetime | None = Field(description="when it ends (exclusive)")
    inspected: int
    ok: int = Field(description="passed by the service (its first verdict)")
    ng: int = Field(description="rejected by the service")
    reviewed: int = Field(description="inspections an operator labelled")
    false_rejects: int = Field(description='NG by the service, the latest review "good"')
    escapes: int = Field(description='OK by the service, the latest review "defect"')
    first_pass_yield: float | None = Field(description="ok / inspected (0-1); null without inspections")

    @classmethod
    def of(cls, counts: Any) -> YieldBucket:
        """The view of a service.records.reports.YieldCounts."""
        names = ("key", "start", "end", "inspected", "ok", "ng", "reviewed", "false_rejects", "escapes")
        return cls(**{name: getattr(counts, name) for name in names}, first_pass_yield=counts.first_pass_yield)


class YieldReportView(BaseModel):
    """GET /reports/yield: counts and first-pass yield per hour, shift or product over [since, until)."""

    since: datetime
    until: datetime
    product_id: str | None = Field(description="null: every product")
    by: Literal["hour", "shift", "product"]
    timezone: str = Field(description="DCPSFR_TIMEZONE: the hours and shifts are its local time")
    buckets: list[YieldBucket] = Field(description="in time order (every hour or shift of the range), or by product")
    total: YieldBucket = Field(description="the whole range (inspections between shifts included)")


class ParetoEntryView(BaseModel):
    """One cause of rejects: a rule, or a cell of the frame's grid."""

    key: str = Field(description='a rule ("score": the score alone), or a cell "R2C3" (row 2, column 3)')
    count: int
    percent: float = Field(description="the share of all counts (0-100)")
    cumulative_percent: float = Field(description="the share of this cause and the ones before it")
    row: int | None = Field(description="the cell's row, 1 at the top (by=region)")
    col: int | None = Field(description="the cell's column, 1 at the left (by=region)")


class ParetoReportView(BaseModel):
    """GET /reports/pareto: the NG inspections of [since, until) by cause, the most frequent first."""

    since: datetime
    until: datetime
    product_id: str | None = Field(description="null: every product")
    by: Literal["rule", "region"]
    grid: int | None = Field(description="by=region: the frame split in grid x grid cells")
    ng: int = Field(description="NG inspections in the range")
    without_region: int | None = Field(description="by=region: NG inspections without a listed region")
    entries: list[ParetoEntryView]
