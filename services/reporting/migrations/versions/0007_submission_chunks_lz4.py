"""Submission chunks compressed with lz4 where the PostgreSQL server has it (docs/reporting.md,
"Submissions"): pglz took ~3.5 s of a 1,000,000-action submission's wall time to compress 800 MB of JSON;
lz4 compresses it about as small, several times faster. Chunks stored before keep their pglz form
(PostgreSQL reads both); SQLite, and a server built without lz4, are left as they are.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HAS_LZ4 = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.exec_driver_sql(_HAS_LZ4).scalar():
        return
    op.execute(f"ALTER TABLE submission_chunks ALTER COLUMN bytes SET COMPRESSION {method}")


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
