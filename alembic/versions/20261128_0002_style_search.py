"""style search: GIN indexes for the gallery's full-text search and tag filter (PostgreSQL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:00:00

* ``ix_styles_search``: GIN over the tsvector of name, description and tags, the exact
  expression that ``app.services.gallery_service.search_document()`` queries (PostgreSQL
  matches an expression index only on an identical expression; a test checks the plan).
* ``ix_styles_tags``: GIN ``jsonb_path_ops`` over ``tags``, for ``tags @> '["x"]'``.

PostgreSQL only: on SQLite the gallery falls back to LIKE / json_each and the migration does
nothing. Autogenerate cannot compare these indexes with the models (an expression index, an
operator class), so ``alembic/env.py`` leaves them out of the comparison (``include_object``).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_DOCUMENT = (
    "to_tsvector('english', name || ' ' || description) || to_tsvector('english', tags)"
)


def _postgres() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgres():
        return
    op.execute(f"CREATE INDEX ix_styles_search ON styles USING gin (({SEARCH_DOCUMENT}))")
    op.execute("CREATE INDEX ix_styles_tags ON styles USING gin (tags jsonb_path_ops)")


def downgrade() -> None:
    if not _postgres():
        return
    op.execute("DROP INDEX IF EXISTS ix_styles_tags")
    op.execute("DROP INDEX IF EXISTS ix_styles_search")
