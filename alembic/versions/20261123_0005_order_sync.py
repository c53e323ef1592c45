"""order sync

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 11:19:23.808677
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sync_peer",
        sa.Column("peer_url", sa.String(length=500), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pulled", sa.BigInteger(), nullable=False),
        sa.Column("pushed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("peer_url", name=op.f("pk_sync_peer")),
    )
    op.add_column(
        "orders", sa.Column("resolution_pending", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("orders", "resolution_pending")
    op.drop_table("sync_peer")
