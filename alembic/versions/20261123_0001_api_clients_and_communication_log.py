"""api clients and communication log

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:08:15.681623
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_client",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_client")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_client_key_hash")),
    )
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_client_org_id"), ["org_id"], unique=False)

    op.create_table(
        "comm_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("api_client_id", sa.String(length=64), nullable=True),
        sa.Column("client_id", sa.String(length=128), nullable=True),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("request_headers", sa.JSON(), nullable=True),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("upstream_url", sa.String(length=1000), nullable=True),
        sa.Column("upstream_status", sa.Integer(), nullable=True),
        sa.Column("upstream_duration_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comm_log")),
    )
    with op.batch_alter_table("comm_log", schema=None) as batch_op:
        batch_op.create_index("ix_comm_log_client_id_id", ["client_id", "id"], unique=False)
        batch_op.create_index("ix_comm_log_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_comm_log_error_code_id", ["error_code", "id"], unique=False)
        batch_op.create_index("ix_comm_log_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("comm_log", schema=None) as batch_op:
        batch_op.drop_index("ix_comm_log_status_id")
        batch_op.drop_index("ix_comm_log_error_code_id")
        batch_op.drop_index("ix_comm_log_created_at")
        batch_op.drop_index("ix_comm_log_client_id_id")

    op.drop_table("comm_log")
    with op.batch_alter_table("api_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_client_org_id"))

    op.drop_table("api_client")
