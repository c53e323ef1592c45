"""async-call airlock

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 04:44:27.700578
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "airlock_connector",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("ttl", sa.Integer(), nullable=False),
        sa.Column("delay", sa.Float(), nullable=False),
        sa.Column("error_urls", sa.JSON(), nullable=False),
        sa.Column("error_emails", sa.JSON(), nullable=False),
        sa.Column("error_secret", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_airlock_connector")),
    )
    op.create_table(
        "async_call",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("connector", sa.String(length=100), nullable=False),
        sa.Column("view_name", sa.String(length=200), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=2000), nullable=False),
        sa.Column("path_params", sa.JSON(), nullable=False),
        sa.Column("query_string", sa.Text(), nullable=False),
        sa.Column("request_headers", sa.JSON(), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("api_client_id", sa.String(length=64), nullable=False),
        sa.Column("api_client_name", sa.String(length=200), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reply_url", sa.String(length=2000), nullable=True),
        sa.Column("respond_async", sa.Boolean(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_content_type", sa.String(length=200), nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("ttl", sa.Integer(), nullable=False),
        sa.Column("delay", sa.Float(), nullable=False),
        sa.Column("next_try", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("locked_by", sa.String(length=64), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_async_call")),
    )
    op.create_index(
        "ix_async_call_api_client_id_created_at", "async_call", ["api_client_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_async_call_connector_status_created_at",
        "async_call",
        ["connector", "status", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_async_call_due",
        "async_call",
        ["next_try"],
        unique=False,
        postgresql_where=sa.text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
        sqlite_where=sa.text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
    )
    op.create_index("ix_async_call_finished_at", "async_call", ["finished_at"], unique=False)
    op.create_table(
        "webhook_secret",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("api_client_id", sa.String(length=64), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_secret")),
    )
    op.create_index(
        op.f("ix_webhook_secret_api_client_id"), "webhook_secret", ["api_client_id"], unique=False
    )
    op.create_table(
        "async_call_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("call_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("next_try", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ttl", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["async_call.id"],
            name=op.f("fk_async_call_log_call_id_async_call"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_async_call_log")),
    )
    op.create_index(op.f("ix_async_call_log_call_id"), "async_call_log", ["call_id"], unique=False)


def downgrade() -> None:

    op.drop_index(op.f("ix_async_call_log_call_id"), table_name="async_call_log")
    op.drop_table("async_call_log")
    op.drop_index(op.f("ix_webhook_secret_api_client_id"), table_name="webhook_secret")
    op.drop_table("webhook_secret")
    op.drop_index("ix_async_call_finished_at", table_name="async_call")
    op.drop_index(
        "ix_async_call_due",
        table_name="async_call",
        postgresql_where=sa.text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
        sqlite_where=sa.text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
    )
    op.drop_index("ix_async_call_connector_status_created_at", table_name="async_call")
    op.drop_index("ix_async_call_api_client_id_created_at", table_name="async_call")
    op.drop_table("async_call")
    op.drop_table("airlock_connector")
