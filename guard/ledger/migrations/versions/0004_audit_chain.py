"""Audit hash chain, retention anchor, export cursors, query indexes.

Existing records are chained in ``seq`` order during the upgrade, so ``guard audit verify``
holds on an upgraded ledger from its first record on.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from guard.ledger.chain import GENESIS, HASHED_FIELDS, record_hash

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _chain_existing_records() -> None:
    """Give every existing record its ``prev_hash`` and ``hash``, oldest first."""
    conn = op.get_bind()
    typed: dict[str, sa.ColumnClause[Any]] = {"seq": sa.column("seq", sa.Integer()), "at": sa.column("at", sa.DateTime(timezone=True))}
    table = sa.table("audit_log", *(typed.get(name, sa.column(name)) for name in (*HASHED_FIELDS, "hash")))
    prev = GENESIS
    last = 0
    while True:
        rows = conn.execute(sa.select(table).where(table.c.seq > last).order_by(table.c.seq).limit(1000)).all()
        if not rows:
            return
        for row in rows:
            fields = {name: getattr(row, name) for name in HASHED_FIELDS}
            fields["prev_hash"] = prev
            digest = record_hash(fields)
            conn.execute(sa.update(table).where(table.c.seq == row.seq).values(prev_hash=prev, hash=digest))
            prev = digest
            last = int(row.seq)


def upgrade() -> None:
    """Apply the revision."""
    op.create_table(
        "audit_anchor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("cut_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("export_file", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_anchor")),
    )
    op.create_table(
        "audit_exports",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_audit_exports")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_patient_id"), ["patient_id"], unique=False)
    _chain_existing_records()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    """Revert the revision."""
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_patient_id"))
        batch_op.drop_index(batch_op.f("ix_audit_log_actor"))
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
    op.drop_table("audit_exports")
    op.drop_table("audit_anchor")
