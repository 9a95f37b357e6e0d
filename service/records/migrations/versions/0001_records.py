"""The records: inspections, reviews and frame retention.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "inspections",
        sa.Column("inspection_id", sa.String(32), primary_key=True),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("reference_version", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("pixel_threshold", sa.Float, nullable=False),
        sa.Column("threshold_source", sa.String(16), nullable=False),
        sa.Column("rules_version", sa.Integer, nullable=False),
        sa.Column("rules", sa.JSON),
        sa.Column("model_config", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(64), nullable=False),
        sa.Column("weights_checksum", sa.String(64), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("score_scale", sa.String(16), nullable=False),
        sa.Column("anomalous", sa.Boolean, nullable=False),
        sa.Column("rule", sa.String(64)),
        sa.Column("rules_fired", sa.JSON, nullable=False),
        sa.Column("regions", sa.JSON, nullable=False),
        sa.Column("n_regions", sa.Integer, nullable=False),
        sa.Column("timings_ms", sa.JSON, nullable=False),
        sa.Column("total_ms", sa.Float, nullable=False),
        sa.Column("warnings", sa.JSON, nullable=False),
        sa.Column("filename", sa.String(255)),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("thumbnail", sa.Text),
        sa.Column("part_id", sa.String(128)),
        sa.Column("station", sa.String(128)),
        sa.Column("camera", sa.String(128)),
        sa.Column("view", sa.String(128)),
        sa.Column("trigger_time", sa.DateTime),
        sa.Column("latency_ms", sa.Float),
        sa.Column("frame_sha256", sa.String(64)),
        sa.Column("frame_bytes", sa.BigInteger),
        sa.Column("frame_kept", sa.Boolean, nullable=False),
        sa.Column("replica", sa.String(128), nullable=False),
    )
    op.create_index("ix_inspections_product_time", "inspections", ["product_id", "time"])
    op.create_index("ix_inspections_time", "inspections", ["time", "inspection_id"])
    op.create_index("ix_inspections_part_id", "inspections", ["part_id"])
    op.create_index("ix_inspections_frame", "inspections", ["frame_kept", "time"])
    op.create_table(
        "reviews",
        sa.Column("review_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("inspection_id", sa.String(32), nullable=False),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("author", sa.String(128)),
        sa.Column("comment", sa.Text),
    )
    op.create_index("ix_reviews_inspection", "reviews", ["inspection_id"])
    op.create_table(
        "retention",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("keep_ng", sa.Boolean, nullable=False),
        sa.Column("keep_ok_every", sa.Integer, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("retention")
    op.drop_table("reviews")
    op.drop_table("inspections")
