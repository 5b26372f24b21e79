"""Frozen versions made tamper-evident (docs/reporting.md, "Submissions"): `submissions.sha256`, the
SHA-256 of a version's bytes, taken as they are frozen and served as `Repr-Digest`; versions frozen before
get theirs from their chunks here. On PostgreSQL a trigger refuses any UPDATE, DELETE or TRUNCATE of
`submission_chunks`, so "a frozen version never changes" holds against a stray statement too, not only
against our own code.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_KEY = ("party", "year", "major", "minor")
_submissions = sa.table("submissions", *(sa.column(name) for name in _KEY), sa.column("sha256", sa.String()))
_chunks = sa.table(
    "submission_chunks", *(sa.column(name) for name in _KEY), sa.column("seq"), sa.column("bytes")
)

_REFUSE = """
CREATE FUNCTION submission_chunks_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a frozen AEF version never changes: % of submission_chunks refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
    bind = op.get_bind()
    for key in bind.execute(sa.select(*(_submissions.c[name] for name in _KEY))).all():
        where = [_chunks.c[name] == value for name, value in zip(_KEY, key, strict=True)]
        digest = hashlib.sha256()
        for seq in range(1 << 31):  # one chunk in memory at a time
            part = bind.execute(sa.select(_chunks.c.bytes).where(*where, _chunks.c.seq == seq)).scalar()
            if part is None:
                break
            digest.update(part)
        bind.execute(
            sa.update(_submissions)
            .where(*(_submissions.c[name] == value for name, value in zip(_KEY, key, strict=True)))
            .values(sha256=digest.hexdigest())
        )
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("sha256", existing_type=sa.String(length=64), nullable=False)
    if bind.dialect.name == "postgresql":
        op.execute(_REFUSE)
        op.execute(
            "CREATE TRIGGER submission_chunks_frozen BEFORE UPDATE OR DELETE ON submission_chunks "
            "FOR EACH ROW EXECUTE FUNCTION submission_chunks_frozen()"
        )
        op.execute(
            "CREATE TRIGGER submission_chunks_not_truncated BEFORE TRUNCATE ON submission_chunks "
            "FOR EACH STATEMENT EXECUTE FUNCTION submission_chunks_frozen()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER submission_chunks_not_truncated ON submission_chunks")
        op.execute("DROP TRIGGER submission_chunks_frozen ON submission_chunks")
        op.execute("DROP FUNCTION submission_chunks_frozen()")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("sha256")
