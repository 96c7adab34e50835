"""drop the selftest job type: the job-system tests register their own task now

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00

``jobs.type`` is a non-native enum without a CHECK constraint (``VARCHAR(30)`` on both
databases), so removing ``selftest`` from ``JobType`` changes no DDL: 0001's literal list no
longer names it (the column it creates is the same). What remains are rows: a ``selftest`` job
left by a server that mounted the old test endpoint could not be loaded any more (its type is
not a ``JobType``), so they go. Downgrade restores nothing: those rows were test jobs.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM jobs WHERE type = 'selftest'")


def downgrade() -> None:
    pass
