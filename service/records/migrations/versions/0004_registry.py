"""The product registry: products, their reference versions and their labelled frames (bytes in blobs), and the
products imported from the old folder store.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "products",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("product_key", sa.String(64), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float),
        sa.Column("pixel_threshold", sa.Float),
        sa.Column("rules", sa.JSON),
        sa.Column("rules_version", sa.Integer, nullable=False),
        sa.Column("recalibration", sa.JSON),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )
    op.create_table(
        "product_versions",
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("bank_sha256", sa.String(64), nullable=False),
        sa.Column("bank_bytes", sa.BigInteger, nullable=False),
        sa.Column("calibration", sa.JSON, nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("product_id", "version", name="uq_product_versions"),
    )
    op.create_table(
        "labelled_frames",
        sa.Column("frame_id", sa.String(32), primary_key=True),
        sa.Column("product_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("time", sa.String(40), nullable=False),
        sa.Column("filename", sa.String(255)),
        sa.Column("inspection_id", sa.String(32)),
        sa.Column("pixel_hash", sa.String(32)),
        sa.Column("score", sa.Float),
        sa.Column("map_max", sa.Float),
        sa.Column("scored_version", sa.Integer),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_labelled_frames_product", "labelled_frames", ["product_id", "position"])
    op.create_table(
        "legacy_imports",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("imported", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    for table in ("legacy_imports", "labelled_frames", "product_versions", "products"):
        op.drop_table(table)
