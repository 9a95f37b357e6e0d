"""The records' tables (SQLAlchemy Core): one row per inspected frame, operator reviews of them, each product's
frame-retention and review policies, the audit log of changes, and the product registry (products, their reference
versions and labelled frames, whose bytes are blobs named by sha256: service.records.blobs). Times are UTC without a
zone (the same text sorts and compares on SQLite and PostgreSQL). The schema changes only by a migration
(service/records/migrations), never by `create_all`."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

inspections = Table(
    "inspections",
    metadata,
    Column("inspection_id", String(32), primary_key=True),
    Column("time", DateTime, nullable=False),  # when the verdict was made (UTC)
    Column("product_id", String(64), nullable=False),
    Column("reference_version", Integer, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("pixel_threshold", Float, nullable=False),
    Column("threshold_source", String(16), nullable=False),  # "calibrated" or "manual"
    Column("rules_version", Integer, nullable=False),
    Column("rules", JSON),  # the acceptance rules in force, None without rules
    Column("model_config", String(64), nullable=False),
    Column("mode", String(64), nullable=False),
    Column("weights_checksum", String(64), nullable=False),  # the references' feature fingerprint
    Column("score", Float, nullable=False),
    Column("score_scale", String(16), nullable=False),
    Column("anomalous", Boolean, nullable=False),
    Column("rule", String(64)),  # the rule that rejected the part, None when it passed
    Column("rules_fired", JSON, nullable=False),
    Column("regions", JSON, nullable=False),
    Column("n_regions", Integer, nullable=False),
    Column("timings_ms", JSON, nullable=False),  # decode, queue, predict, the model's stages, encode
    Column("total_ms", Float, nullable=False),
    Column("warnings", JSON, nullable=False),
    Column("filename", String(255)),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("thumbnail", Text),  # JPEG data URL, about 5 kB
    Column("part_id", String(128)),
    Column("station", String(128)),
    Column("camera", String(128)),
    Column("view", String(128)),  # which view of a part seen several ways
    Column("trigger_time", DateTime),
    Column("latency_ms", Float),  # trigger_time -> verdict (the station's clock against the service's)
    Column("frame_sha256", String(64)),  # the uploaded file's hash, None when the policy did not keep it
    Column("frame_bytes", BigInteger),
    Column("frame_kept", Boolean, nullable=False),  # whether the archive still holds the frame
    Column("replica", String(128), nullable=False),  # the host that answered
    Column("review", String(16)),  # "pending": waits in the review queue, "reviewed": labelled since, None: neither
    Index("ix_inspections_product_time", "product_id", "time"),
    Index("ix_inspections_time", "time", "inspection_id"),
    Index("ix_inspections_part_id", "part_id"),
    Index("ix_inspections_frame", "frame_kept", "time"),
    Index("ix_inspections_review", "review", "time", "inspection_id"),
)

reviews = Table(
    "reviews",
    metadata,
    Column("review_id", Integer, primary_key=True, autoincrement=True),
    Column("inspection_id", String(32), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("label", String(16), nullable=False),  # "good" or "defect"
    Column("source", String(16), nullable=False),  # "feedback" (POST /products/{id}/feedback, the review queue's too)
    Column("time", DateTime, nullable=False),
    Column("author", String(128)),  # the API key's name, "anonymous" when authentication is off
    Column("comment", Text),
    Index("ix_reviews_inspection", "inspection_id"),
)

retention = Table(
    "retention",
    metadata,
    Column("product_id", String(64), primary_key=True),
    Column("keep_ng", Boolean, nullable=False),
    Column("keep_ok_every", Integer, nullable=False),  # 0: no OK frame, 1: every one, N: every Nth
    Column("days", Integer, nullable=False),
    Column("updated", DateTime, nullable=False),
)

review_policy = Table(
    "review_policy",
    metadata,
    Column("product_id", String(64), primary_key=True),
    Column("band", Float, nullable=False),  # scores within ±band × |threshold| of the threshold are reviewed
    Column("all_ng", Boolean, nullable=False),  # every NG inspection too
    Column("updated", DateTime, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("audit_id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime, nullable=False),
    Column("actor", String(64), nullable=False),  # the API key's name, "anonymous" when authentication is off
    Column("action", String(32), nullable=False),  # e.g. "threshold.set" (service.records.audit.ACTIONS)
    Column("product_id", String(64), nullable=False),
    Column("before", JSON),  # small values (thresholds, rules, versions), never image bytes
    Column("after", JSON),
    Index("ix_audit_time", "time", "audit_id"),
    Index("ix_audit_product_time", "product_id", "time"),
)

products = Table(
    "products",
    metadata,
    Column("product_id", String(64), primary_key=True),
    Column("product_key", String(64), nullable=False, unique=True),  # the id lower-cased: no two ids differ by case
    Column("version", Integer, nullable=False),  # the current version (product_versions)
    Column("uid", String(32), nullable=False),  # the current version's uid: the compare-and-swap token
    Column("generation", Integer, nullable=False),  # bumped by every change of the row
    Column("threshold", Float),  # manual overrides, None: the calibrated value
    Column("pixel_threshold", Float),
    Column("rules", JSON),  # the acceptance rules, None without rules
    Column("rules_version", Integer, nullable=False),
    Column("recalibration", JSON),  # thresholds recomputed from calibration frames, for the current version only
    Column("created", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
)

product_versions = Table(
    "product_versions",
    metadata,
    Column("product_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("uid", String(32), nullable=False),
    Column("bank_sha256", String(64), nullable=False),  # the ReferenceSet as one tar blob
    Column("bank_bytes", BigInteger, nullable=False),
    Column("calibration", JSON, nullable=False),
    Column("created_at", String(40), nullable=False),  # ISO 8601 with its zone, as the API shows it
    UniqueConstraint("product_id", "version", name="uq_product_versions"),
)

labelled_frames = Table(
    "labelled_frames",
    metadata,
    Column("frame_id", String(32), primary_key=True),
    Column("product_id", String(64), nullable=False),
    Column("position", Integer, nullable=False),  # oldest first
    Column("label", String(16), nullable=False),  # "good" or "defect"
    Column("source", String(16), nullable=False),  # "calibration" or "feedback"
    Column("time", String(40), nullable=False),
    Column("filename", String(255)),
    Column("inspection_id", String(32)),
    Column("pixel_hash", String(32)),
    Column("score", Float),
    Column("map_max", Float),
    Column("scored_version", Integer),  # the reference version that gave the score
    Column("sha256", String(64), nullable=False),  # the frame's file as uploaded, a blob
    Column("bytes", BigInteger, nullable=False),
    Index("ix_labelled_frames_product", "product_id", "position"),
)

legacy_imports = Table(
    "legacy_imports",
    metadata,
    Column("product_id", String(64), primary_key=True),  # a product of the old folder store, imported once
    Column("uid", String(64), nullable=False),
    Column("imported", DateTime, nullable=False),
)
