"""order feed sequencer: writes leave change_seq empty, feed readers number them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_orders_unsequenced",
        "orders",
        ["updated_at", "id"],
        unique=False,
        postgresql_where=sa.text("change_seq IS NULL"),
        sqlite_where=sa.text("change_seq IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_orders_unsequenced",
        table_name="orders",
        postgresql_where=sa.text("change_seq IS NULL"),
        sqlite_where=sa.text("change_seq IS NULL"),
    )
