"""Several nodes on one ledger: the node of each audit record and instance, the nodes, task leases.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the node columns and the two tables."""
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("node", sa.String(32), nullable=True))
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("node", sa.String(32), nullable=True))
    op.create_table(
        "nodes",
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ready", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("dicom_port", sa.Integer(), nullable=True),
        sa.Column("http_port", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("node", name="pk_nodes"),
    )
    op.create_table(
        "task_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(80), nullable=True),
        sa.Column("node", sa.String(32), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_task_leases"),
    )


def downgrade() -> None:
    """Remove them again."""
    op.drop_table("task_leases")
    op.drop_table("nodes")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("node")
