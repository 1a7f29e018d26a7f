"""A partial index of the instances forwarding may claim: a claim no longer reads every instance.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

#: ``guard.ledger.schema.CLAIMABLE`` as it was when this revision was written (a revision does not change with the code).
CLAIMABLE = sa.text("state IN ('received', 'failed')")

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply the revision."""
    op.create_index("ix_instances_claimable", "instances", ["id"], unique=False, sqlite_where=CLAIMABLE, postgresql_where=CLAIMABLE)


def downgrade() -> None:
    """Revert the revision."""
    op.drop_index("ix_instances_claimable", table_name="instances")
