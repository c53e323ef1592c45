"""throttling configurations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:02:55.937810
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "throttling_config",
        sa.Column("uid", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("sandbox_id", sa.String(length=36), nullable=False),
        sa.Column("sandbox_name", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("url_pattern", sa.String(length=2000), nullable=False),
        sa.Column("methods", sa.JSON(), nullable=False),
        sa.Column("max_throughput", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("has_been_deployed", sa.Boolean(), nullable=False),
        sa.Column("runtime_version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_by_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified_by", sa.String(length=200), nullable=False),
        sa.Column("last_modified_by_id", sa.String(length=200), nullable=False),
        sa.Column("last_modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_deployed_by", sa.String(length=200), nullable=True),
        sa.Column("last_deployed_by_id", sa.String(length=200), nullable=True),
        sa.Column("last_deployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_throttling_config")),
        sa.UniqueConstraint("org_id", name="uq_throttling_config_org"),
    )
    op.create_table(
        "throttling_runtime",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("config_uid", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=200), nullable=False),
        sa.Column("url_pattern", sa.String(length=2000), nullable=False),
        sa.Column("methods", sa.JSON(), nullable=False),
        sa.Column("max_throughput", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undeployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_throttling_runtime")),
        sa.UniqueConstraint("config_uid", "version", name="uq_throttling_runtime_version"),
    )
    op.create_index(
        op.f("ix_throttling_runtime_config_uid"), "throttling_runtime", ["config_uid"], unique=False
    )
    op.create_index(op.f("ix_throttling_runtime_org_id"), "throttling_runtime", ["org_id"], unique=False)
    op.add_column("async_call", sa.Column("throttle_slot", sa.DateTime(timezone=True), nullable=True))
    op.add_column("async_call", sa.Column("throttle_uid", sa.String(length=36), nullable=True))
    op.add_column("async_call", sa.Column("throttle_version", sa.Integer(), nullable=True))
    op.create_index(
        "ix_async_call_throttle",
        "async_call",
        ["throttle_uid", "throttle_version"],
        unique=False,
        postgresql_where=sa.text("throttle_slot IS NOT NULL"),
        sqlite_where=sa.text("throttle_slot IS NOT NULL"),
    )


def downgrade() -> None:

    op.drop_index(
        "ix_async_call_throttle",
        table_name="async_call",
        postgresql_where=sa.text("throttle_slot IS NOT NULL"),
        sqlite_where=sa.text("throttle_slot IS NOT NULL"),
    )
    op.drop_column("async_call", "throttle_version")
    op.drop_column("async_call", "throttle_uid")
    op.drop_column("async_call", "throttle_slot")
    op.drop_index(op.f("ix_throttling_runtime_org_id"), table_name="throttling_runtime")
    op.drop_index(op.f("ix_throttling_runtime_config_uid"), table_name="throttling_runtime")
    op.drop_table("throttling_runtime")
    op.drop_table("throttling_config")
