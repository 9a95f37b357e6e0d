"""What changes or reads a product beyond one store call: upload references (fit, calibrate, persist), add
calibration frames, operator feedback, and inspecting frames. No HTTP: the routes parse requests, call these
and shape the answers; errors are domain errors (service.errors) or the store's.

Thresholds stay reachable (docs/thresholds.md): good frames (calibration, feedback) whose recalibrated thresholds
would reject nothing are refused (Conflict) before anything is stored, and frames that move the threshold in force
by more than CONFIRM_FACTOR ask for confirmation (NeedsConfirmation: force=true); a hand-set threshold at or above
the scale's end is refused (Conflict).

Read-modify-write of a product's labelled frames runs under its frames lock (one writer per product in this
process), in a transaction holding the product's row (across replicas), and the store's compare-and-swap on new
versions and recalibrations (one winner across replicas: a loser gets Conflict).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from model import Frame, Prediction
from service.decisions.calibration import FittedProduct, extend_and_calibrate, fit_and_calibrate
from service.decisions.evaluation import evaluate
from service.decisions.results import InspectionResult, Outputs, PartTag, RegionLimits, inspection_result
from service.decisions.thresholds import (
    Calibration,
    CalibrationPolicy,
    above_the_scale,
    large_change,
    large_pixel_change,
    normal_values,
    recalibrate,
    unreachable_calibration,
)
from service.engine.pipeline import Decoded, Engine, Upload
from service.engine.worker import Ticket
from service.errors import (
    Conflict,
    InvalidInput,
    NeedsConfirmation,
    NotFound,
    ServiceError,
    StorageFailed,
    TooLarge,
)
from service.imaging.decode import decode_image
from service.metrics import Metrics
from service.products.frames import (
    FrameStore,
    Label,
    LabelledFrame,
    bounded,
    calibration_values,
    first_seen,
    new_frame,
    pixel_digest,
    relabelled,
    relabelled_away,
)
from service.products.store import Product, ProductMissing, ProductStore, StoreConflict, storage_failure
from service.records.recorder import Recorder
from service.records.rows import inspection_row
from service.records.store import records_call

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """The settings that bound what one request may send."""

    max_references: int  # DCPSFR_MAX_REFERENCES
    max_images_per_request: int  # DCPSFR_MAX_IMAGES_PER_REQUEST
    calibration_max_frames: int  # DCPSFR_CALIBRATION_MAX_FRAMES
    feedback_max_frames: int  # DCPSFR_FEEDBACK_MAX_FRAMES
    max_pixels: int  # DCPSFR_MAX_PIXELS


@dataclass(frozen=True)
class Uploaded:
    """A product version just stored, and what storing it took (ms per stage)."""

    product: Product
    timings_ms: dict[str, float]
    duplicates_ignored: int = 0  # calibration frames whose pixels were already in the set


@dataclass(frozen=True)
class Calibrated:
    """The product after good frames joined its calibration set; duplicates (pixels already there) count once."""

    product: Product
    duplicates_ignored: int


@dataclass(frozen=True)
class Labelled:
    """The product and its evaluation after a label; a duplicate (the same pixels with the same label) is ignored."""

    product: Product
    evaluation: dict[str, Any]
    duplicates_ignored: int


@dataclass(frozen=True)
class Inspected:
    """The results of one inspect request, in the order of its images, against `product`."""

    product: Product
    results: list[InspectionResult]


def check_count(uploads: Sequence[Any], limit: int, setting: str) -> None:
    """Raise InvalidInput when there are no files, TooLarge when more than `limit` (named by its `setting`)."""
    if not uploads:
        raise InvalidInput("no images: send one or more files in the multipart field 'images'")
    if len(uploads) > limit:
        raise TooLarge(f"{len(uploads)} images in one request; at most {limit} ({setting})")


def check_bit_depth(frames: Sequence[Frame], names: Sequence[str], bit_depth: int) -> None:
    """Raise InvalidInput when a reference's data exceeds the bit depth given at upload: it would be clipped white,
    and so would every frame like it (without the field, the references' maximum sets it)."""
    for frame, name in zip(frames, names, strict=True):
        highest = frame.above_bit_depth(bit_depth)
        if highest is not None:
            needed = next(bits for bits in range(bit_depth, 17) if highest < 2**bits)
            raise InvalidInput(
                f"{name}: values up to {highest} do not fit bit_depth={bit_depth} (0..{2**bit_depth - 1}); send "
                f"bit_depth={needed} or more, or leave it out to take it from the references"
            )


def check_recalibrated(product: Product, calibration: Calibration, force: bool) -> None:
    """Raise Conflict when good frames would recalibrate `product` to thresholds that reject nothing (never applied,
    not even with `force`), and NeedsConfirmation when its calibrated image or pixel threshold, in force, would move
    by more than CONFIRM_FACTOR and `force` is false. Both are 409s: the request is well-formed, the product's scale and
    references stand in the way."""
    problem = unreachable_calibration(calibration)
    if problem is not None:
        highest = max(normal_values(calibration)[0])
        raise Conflict(
            f"refused, nothing changed: these good frames would make the calibrated {problem}. They score up to "
            f"{highest:.4g} against the references of {product.product_id!r}: if good parts look like this, add "
            "them to the references (POST /products/<id>/references, or feedback with add_to_references=true)"
        )
    if force:
        return
    changes = [
        large_change(product.calibration, calibration) if product.threshold_override is None else None,
        large_pixel_change(product.calibration, calibration) if product.pixel_threshold_override is None else None,
    ]  # only a calibrated threshold in force moves: a hand-set one stays
    change = next((c for c in changes if c is not None), None)
    if change is not None:
        key = change.name.replace(" ", "_")
        raise NeedsConfirmation(
            f"this would move the {change.name} of {product.product_id!r} from {change.threshold:.4g} to "
            f"{change.proposed:.4g} (x{change.factor:.3g}); nothing "
            "changed: send the request again with force=true to apply it",
            details={key: change.threshold, f"proposed_{key}": change.proposed, "factor": change.factor},
        )


def check_new_reference(product_id: str, calibration: Calibration) -> None:
    """Raise Conflict when a frame added to the references would leave thresholds that reject nothing."""
    problem = unreachable_calibration(calibration)
    if problem is not None:
        raise Conflict(
            f"refused, nothing changed: with this frame among the references of {product_id!r} the calibrated {problem}"
        )


def unknown_product(product_id: str) -> NotFound:
    """The NotFound of a product id with no product, saying how to create one."""
    return NotFound(
        f"unknown product {product_id!r}: upload its references with POST /products/{product_id}/references"
    )


class Workflows:
    """The product workflows over the store, labelled frames, engine, inspection records and metrics."""

    def __init__(
        self,
        store: ProductStore,
        frames: FrameStore,
        engine: Engine,
        recorder: Recorder,
        metrics: Metrics,
        policy: CalibrationPolicy,
        limits: Limits,
        regions: RegionLimits,
        thumbnails: bool = True,
    ) -> None:
        self.store = store
        self.frames = frames
        self.engine = engine
        self.recorder = recorder
        self.metrics = metrics
        self.policy = policy
        self.limits = limits
        self.regions = regions
        self.thumbnails = thumbnails  # DCPSFR_HISTORY_THUMBNAILS: the recent inspections show one per frame

    # --- reads ----------------------------------------------------------------------------------------------

    def product(self, product_id: str) -> Product:
        """The product (read from disk when not in memory yet); NotFound when there is none."""
        product = self.store.get(product_id)
        if product is None:
            raise unknown_product(product_id)
        return product

    async def existing(self, product_id: str) -> Product:
        """`product`: from memory at once, else read off the event loop (a product not in memory yet)."""
        product = self.store.loaded(product_id)
        return product if product is not None else await asyncio.to_thread(self.product, product_id)

    async def evaluation(self, product_id: str) -> dict[str, Any]:
        """The current threshold's i-AUROC, F1, false alarms and misses on the product's feedback frames."""
        product = await self.existing(product_id)
        frames = await asyncio.to_thread(self.frames.frames, product_id)
        return evaluate(product_id, frames, product.threshold, product.version, product.calibration.score_scale)

    # --- thresholds by hand ---------------------------------------------------------------------------------

    async def set_thresholds(self, product_id: str, threshold: float, pixel_threshold: float | None) -> Product:
        """Override the image threshold (and the pixel threshold; None: the calibrated one). Raises Conflict for a
        value at or above the maximum of the product's scale (it would reject nothing; a logit product has none),
        NotFound for an unknown product. A threshold below every normal score is applied: the product summary warns
        that it rejects every part."""
        product = await self.existing(product_id)
        scale = product.calibration.score_scale
        problem = above_the_scale(threshold, scale)
        if pixel_threshold is not None:
            problem = problem or above_the_scale(pixel_threshold, scale, "pixel threshold")
        if problem is not None:
            raise Conflict(f"{problem}; choose a lower value (the summary lists the product's normal scores)")
        updated = await asyncio.to_thread(self.store.set_thresholds, product_id, threshold, pixel_threshold)
        if updated is None:
            raise unknown_product(product_id)
        return updated

    # --- inspecting -----------------------------------------------------------------------------------------

    async def inspect(
        self,
        product: Product,
        uploads: Sequence[Upload],
        ticket: Ticket | None,
        outputs: Outputs,
        part: PartTag | None = None,
    ) -> Inspected:
        """Decode, predict and judge each upload against `product` (admitted by `ticket`), with the PNGs `outputs`
        asks for (and a thumbnail when `thumbnails`); each result is counted and recorded (spooled before this
        returns; tagged with `part`), its frame archived as the retention policy says."""
        decoded = await self.engine.decode(uploads)
        finish = partial(self._result, product, decoded.frames, outputs)
        predicted = await self.engine.predict(product.refs, decoded.frames, ticket, finish)
        results = []
        for result, decode_ms in zip(predicted.results, decoded.decode_ms, strict=True):
            timings = {"decode": decode_ms, "queue": predicted.queue_ms, "predict": predicted.predict_ms}
            all_timings = {**timings, **result.timings_ms}
            results.append(replace(result, timings_ms={k: round(v, 3) for k, v in all_timings.items()}))
            self.metrics.count_inspection(result.anomalous, product.product_id, result.relative_score)
            self.metrics.count_regions(result.n_regions, result.rules_fired)
            self.metrics.count_warnings(result.warning_kinds)
        await asyncio.to_thread(self._record, product, results, uploads, part or PartTag())
        return Inspected(product, results)

    def _record(
        self, product: Product, results: list[InspectionResult], uploads: Sequence[Upload], part: PartTag
    ) -> None:
        """Spool each result's record; a failing spool disk is logged, never the inspection's failure."""
        now = datetime.now(UTC)
        for result, upload in zip(results, uploads, strict=True):
            try:
                self.recorder.record(inspection_row(result, product, upload.filename, part, now), upload.data)
            except OSError as err:
                self.metrics.records_lost.inc()
                log.error("the record of inspection %s could not be spooled: %s", result.inspection_id, err)

    def _result(
        self, product: Product, frames: list[Frame], outputs: Outputs, prediction: Prediction, index: int
    ) -> InspectionResult:
        frame = frames[index] if self.thumbnails else None  # the thumbnail is the history's only use of it
        return inspection_result(prediction, product, self.regions, outputs, frame)

    # --- references -----------------------------------------------------------------------------------------

    async def upload_references(
        self,
        product_id: str,
        images: Sequence[Upload],
        calibration: Sequence[Upload] = (),
        bit_depth: int | None = None,
    ) -> Uploaded:
        """Fit, calibrate and store a new version of the product's references. The product's stored calibration
        and labelled frames are kept and scored against the new references; `calibration` uploads join them."""
        limits = self.limits
        check_count(images, limits.max_references, "DCPSFR_MAX_REFERENCES")
        if calibration:
            check_count(calibration, limits.calibration_max_frames, "DCPSFR_CALIBRATION_MAX_FRAMES")
        await asyncio.to_thread(self._check_new_id, product_id)  # before the fit; checked again at commit
        decoded = await self.engine.decode(images)
        if bit_depth is not None:
            await asyncio.to_thread(check_bit_depth, decoded.frames, [u.name for u in images], bit_depth)
        added_frames = (await self.engine.decode(calibration)) if calibration else Decoded([], [])
        candidates = await _calibration_frames(calibration, added_frames.frames)
        async with self.frames.lock(product_id):
            expected = await asyncio.to_thread(self.store.token, product_id)  # checked again at commit
            stored, stored_frames = await asyncio.to_thread(self._load_frames, product_id)
            first = first_seen(stored, candidates)
            added = [candidates[i] for i in first]
            added_files = {candidates[i].frame_id: calibration[i].data for i in first}
            frames = bounded(stored + added, limits.calibration_max_frames, limits.feedback_max_frames)
            new = {candidates[i].frame_id: added_frames.frames[i] for i in first}
            by_id = {**stored_frames, **new}
            call = partial(
                fit_and_calibrate,
                images=decoded.frames,
                frames=[by_id[f.frame_id] for f in frames],
                policy=self.policy,
                good=[f.label == "good" for f in frames],
                bit_depth=bit_depth,
            )
            fitted: FittedProduct = await self.engine.call(call, "fit")
            start = time.perf_counter()
            product = await self._commit(product_id, fitted, expected)
            await self._save_scored(product, frames, fitted.frame_predictions, added_files)
        self.metrics.products.set(len(self.store))
        decode_ms = sum(decoded.decode_ms) + sum(added_frames.decode_ms)
        store_ms = (time.perf_counter() - start) * 1000.0
        timings_ms = {"decode": decode_ms, **fitted.timings_ms, "store": store_ms}
        return Uploaded(product, timings_ms, len(candidates) - len(added))

    async def add_calibration_frames(
        self, product_id: str, images: Sequence[Upload], force: bool = False
    ) -> Calibrated:
        """Good frames join the calibration set and the thresholds are recomputed; references unchanged (no refit,
        no backbone pass for them): only the new frames are scored. A frame whose decoded pixels are already in the
        set (or earlier in the request) counts once. Raises Conflict (thresholds that would reject nothing) or
        NeedsConfirmation (a large change, unless `force`) before anything is stored."""
        await self.existing(product_id)
        check_count(images, self.limits.calibration_max_frames, "DCPSFR_CALIBRATION_MAX_FRAMES")
        decoded = await self.engine.decode(images)
        candidates = await _calibration_frames(images, decoded.frames)
        async with self.frames.lock(product_id):
            product = await self.existing(product_id)
            stored = await asyncio.to_thread(self.frames.frames, product_id)
            first = first_seen(stored, candidates)
            ignored = len(candidates) - len(first)
            if not first:
                return Calibrated(product, ignored)
            files = {candidates[i].frame_id: images[i].data for i in first}
            scored = await self._score(product, [candidates[i] for i in first], [decoded.frames[i] for i in first])
            await self._check_recalibration(product, scored, force)
            kept = await self._keep(product, scored, files)
            return Calibrated(await self._recalibrated(product, kept), ignored)

    # --- feedback -------------------------------------------------------------------------------------------

    async def give_feedback(
        self,
        product_id: str,
        label: Label,
        inspection_id: str | None,
        image: Upload | None,
        add_to_references: bool,
        force: bool = False,
        author: str | None = None,
    ) -> Labelled:
        """Label a frame (a recent inspection's, or an uploaded one) good or defect. A good frame joins the
        calibration set (thresholds recomputed); a relabelled good one leaves it; every labelled frame is kept
        (bounded) for the evaluation. `add_to_references` (good only) also makes it a reference: a new version.
        A frame whose pixels already carry the label is ignored (counted in the answer). A label that would leave
        thresholds that reject nothing is refused (Conflict), one that would move the threshold in force by more
        than CONFIRM_FACTOR asks first (NeedsConfirmation) unless `force`; nothing is stored then. A label by
        inspection id is recorded on the inspection with `author` (the API key's name) and the time: the review
        queue's verdict."""
        product = await self.existing(product_id)
        if (inspection_id is None) == (image is None):
            raise InvalidInput(
                "send either the form field 'inspection_id' or one file in 'images', not both or neither"
            )
        if add_to_references and label != "good":
            raise InvalidInput("only a frame labelled 'good' can join the references")
        if add_to_references:
            self._check_room_for_a_reference(product)
        data, filename = await asyncio.to_thread(self._feedback_frame, product_id, inspection_id, image)
        decoded = await asyncio.to_thread(decode_image, data, "image", self.limits.max_pixels)
        digest = await asyncio.to_thread(pixel_digest, decoded)
        frame = new_frame(label, "feedback", datetime.now(UTC).isoformat(), filename, inspection_id, digest)
        ignored = 0
        async with self.frames.lock(product_id):
            product = await self.existing(product_id)
            stored = await asyncio.to_thread(self.frames.frames, product_id)
            if add_to_references:
                self._check_room_for_a_reference(product)  # again: a request just before may have filled it
                product, kept = await self._add_reference(product, frame, decoded, data)
            elif not first_seen(stored, [frame]):
                kept, ignored = stored, 1  # these pixels already carry this label
            else:
                product, kept = await self._label(product, stored, frame, decoded, data, force)
        if inspection_id is not None:
            await asyncio.to_thread(self._review, product_id, inspection_id, label, author)
        evaluation = evaluate(product_id, kept, product.threshold, product.version, product.calibration.score_scale)
        return Labelled(product, evaluation, ignored)

    async def _label(
        self,
        product: Product,
        stored: list[LabelledFrame],
        frame: LabelledFrame,
        image: Frame,
        data: bytes,
        force: bool,
    ) -> tuple[Product, list[LabelledFrame]]:
        """Keep a labelled frame, recalibrating when a good frame joins or leaves the calibration set."""
        was_good = any(f.label == "good" for f in relabelled_away(stored, frame))
        recalibrates = frame.label == "good" or was_good
        scored = await self._score(product, [frame], [image])
        if recalibrates:
            await self._check_recalibration(product, scored, force)
        kept = await self._keep(product, scored, {frame.frame_id: data})
        if recalibrates:
            product = await self._recalibrated(product, kept)
        return product, kept

    def _check_new_id(self, product_id: str) -> None:
        """Conflict when `product_id` is new and a stored product's id differs from it only by case."""
        if self.store.token(product_id) is None:
            try:
                self.store.check_new_id(product_id)
            except StoreConflict as err:
                raise Conflict(str(err)) from None

    def _check_room_for_a_reference(self, product: Product) -> None:
        limit = self.limits.max_references
        if product.refs.n_references >= limit:
            # the product's state, not the request, stands in the way: a conflict (a well-formed request is never 422)
            raise Conflict(f"{product.product_id!r} already has {limit} references (DCPSFR_MAX_REFERENCES)")

    def _feedback_frame(
        self, product_id: str, inspection_id: str | None, image: Upload | None
    ) -> tuple[bytes, str | None]:
        """(bytes, filename) of the frame the feedback is about: the uploaded one, or an inspection's from the archive
        (any replica's). NotFound: no such inspection of this product, or its frame is not (or no longer) kept;
        Unavailable: the records database does not answer."""
        if image is not None:
            return image.data, image.filename
        record = self.record(inspection_id)
        if record is None or record["product_id"] != product_id:
            raise NotFound(f"no inspection {inspection_id!r} of {product_id!r}; send the frame in 'images'")
        data = self.recorder.frame(record["frame_sha256"]) if record["frame_kept"] else None
        if data is None:
            raise NotFound(
                f"the frame of inspection {inspection_id!r} is not kept (the product's retention policy, PUT "
                f"/products/{product_id}/retention); send the frame in 'images'"
            )
        return data, record["filename"]

    def record(self, inspection_id: str) -> dict[str, Any] | None:
        """One inspection's record (this replica's spooled ones written first), None when there is none; Unavailable
        when the records database does not answer."""
        self.recorder.flush()
        return records_call(self.recorder.store.get, inspection_id)

    def _review(self, product_id: str, inspection_id: str, label: str, author: str | None) -> None:
        """The label on the record (out of the review queue); the feedback stands when the database fails meanwhile
        (logged)."""
        try:
            self.recorder.store.add_review(inspection_id, product_id, label, author)
        except SQLAlchemyError as err:
            log.error("the label of inspection %s was not recorded: %s", inspection_id, str(err).splitlines()[0])

    async def _add_reference(
        self, product: Product, frame: LabelledFrame, image: Frame, data: bytes
    ) -> tuple[Product, list[LabelledFrame]]:
        """A new version with `image` as one more reference; the labelled frames scored against it."""
        limits = self.limits
        stored, stored_frames = await asyncio.to_thread(self._load_frames, product.product_id)
        frames = bounded(relabelled(stored, [frame]), limits.calibration_max_frames, limits.feedback_max_frames)
        by_id = {**stored_frames, frame.frame_id: image}
        call = partial(
            extend_and_calibrate,
            product_refs=product.refs,
            calibration=product.calibration,
            images=[image],
            frames=[by_id[f.frame_id] for f in frames],
            good=[f.label == "good" for f in frames],
            policy=self.policy,
        )
        fitted: FittedProduct = await self.engine.call(call, "fit")
        check_new_reference(product.product_id, fitted.calibration)
        updated = await self._commit(product.product_id, fitted, product.uid)
        self.metrics.products.set(len(self.store))
        kept = await self._save_scored(updated, frames, fitted.frame_predictions, {frame.frame_id: data})
        return updated, kept

    # --- labelled frames and versions -----------------------------------------------------------------------

    def _load_frames(self, product_id: str) -> tuple[list[LabelledFrame], dict[str, Frame]]:
        """The stored labelled frames whose files decode, and their frames (a broken file is logged and dropped)."""
        kept, decoded = [], {}
        for frame in self.frames.frames(product_id):
            try:
                data = self.frames.image_bytes(product_id, frame)
                decoded[frame.frame_id] = decode_image(data, frame.file_name, self.limits.max_pixels)
                kept.append(frame)
            except (OSError, ServiceError) as err:
                log.warning("product %r: labelled frame %s dropped: %s", product_id, frame.frame_id, err)
        return kept, decoded

    async def _score(self, product: Product, frames: list[LabelledFrame], decoded: list[Frame]) -> list[LabelledFrame]:
        """New labelled frames scored against the product's current version."""
        predicted = await self.engine.predict(product.refs, decoded)
        return [_scored(f, p, product.version) for f, p in zip(frames, predicted.results, strict=True)]

    async def _check_recalibration(self, product: Product, scored: list[LabelledFrame], force: bool) -> None:
        """`check_recalibrated` on the thresholds the stored frames plus `scored` would give, before any is stored."""
        stored = await asyncio.to_thread(self.frames.frames, product.product_id)
        limits = self.limits
        frames = bounded(relabelled(stored, scored), limits.calibration_max_frames, limits.feedback_max_frames)
        new = recalibrate(product.calibration, calibration_values(frames, product.version), self.policy)
        check_recalibrated(product, new, force)

    async def _keep(
        self, product: Product, scored: list[LabelledFrame], files: dict[str, bytes]
    ) -> list[LabelledFrame]:
        """Keep scored frames with the stored ones (bounded by the frame store); returns every kept frame. Call
        under `self.frames.lock(product_id)`."""
        try:
            return await asyncio.to_thread(self.frames.add, product.product_id, scored, files)
        except ProductMissing:  # deleted meanwhile
            raise unknown_product(product.product_id) from None
        except OSError as err:  # a frame's blob could not be written: no row changed
            what = f"store the labelled frames of {product.product_id!r}"
            raise StorageFailed(str(storage_failure(what, self.store.root, err))) from err

    async def _commit(self, product_id: str, fitted: FittedProduct, expected: str | None) -> Product:
        """Store the new version unless the product moved since `expected` (its token) was read (Conflict)."""
        try:
            commit = partial(self.store.commit, expected=expected)
            return await asyncio.to_thread(commit, product_id, fitted.refs, fitted.calibration)
        except StoreConflict as err:
            raise Conflict(str(err)) from err

    async def _save_scored(
        self, product: Product, frames: list[LabelledFrame], predictions: list[Prediction], files: dict[str, bytes]
    ) -> list[LabelledFrame]:
        """Frames with their scores against the product's (new) version, saved."""
        scored = [_scored(f, p, product.version) for f, p in zip(frames, predictions, strict=True)]
        try:
            return await asyncio.to_thread(self.frames.save, product.product_id, scored, files)
        except OSError as err:
            what = f"store the labelled frames of {product.product_id!r} (version {product.version} is stored)"
            raise StorageFailed(str(storage_failure(what, self.store.root, err))) from err

    async def _recalibrated(self, product: Product, frames: list[LabelledFrame]) -> Product:
        """The product with thresholds recomputed from its calibration set (references unchanged)."""
        new = recalibrate(product.calibration, calibration_values(frames, product.version), self.policy)
        write = partial(self.store.set_recalibration, product.product_id, product.uid, new)  # this version only
        updated = await asyncio.to_thread(write)
        if updated is None or updated.uid != product.uid:
            raise Conflict(f"the references of {product.product_id!r} changed during this request; send it again")
        return updated


async def _calibration_frames(uploads: Sequence[Upload], frames: Sequence[Frame]) -> list[LabelledFrame]:
    """New good calibration frames for decoded uploads, each with its pixels' hash."""
    digests = await asyncio.to_thread(lambda: [pixel_digest(frame) for frame in frames])
    return [
        new_frame("good", "calibration", datetime.now(UTC).isoformat(), u.filename, pixel_hash=d)
        for u, d in zip(uploads, digests, strict=True)
    ]


def _scored(frame: LabelledFrame, prediction: Prediction, version: int) -> LabelledFrame:
    return frame.scored(prediction.decision_score, prediction.map_max, version)
