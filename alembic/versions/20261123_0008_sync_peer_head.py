"""sync_peer.peer_head: the peer's feed head as its last page said (the pull's lag)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 13:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sync_peer", sa.Column("peer_head", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("sync_peer", "peer_head")
