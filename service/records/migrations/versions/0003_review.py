"""The review queue: each record's review state (indexed: the queue is one query) and each product's review policy.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add inspections.review and its index; create the review_policy table."""
    op.add_column("inspections", sa.Column("review", sa.String(16)))
    op.create_index("ix_inspections_review", "inspections", ["review", "time", "inspection_id"])
    op.create_table(
        "review_policy",
        sa.Column("product_id", sa.String(64), primary_key=True),
        sa.Column("band", sa.Float, nullable=False),
        sa.Column("all_ng", sa.Boolean, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("review_policy")
    op.drop_index("ix_inspections_review", "inspections")
    with op.batch_alter_table("inspections") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("review")
