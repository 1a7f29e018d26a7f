"""An index on instances.commit_transaction_uid: applying a commitment report no longer reads every instance.

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_commit_transaction_uid"), ["commit_transaction_uid"], unique=False)


def downgrade() -> None:
    """Revert the revision."""
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_commit_transaction_uid"))
