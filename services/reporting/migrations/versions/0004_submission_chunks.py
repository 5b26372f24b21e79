"""Frozen submissions stored in chunks (`submission_chunks`) with their size on `submissions`, instead of
one `body` value: a submission is written as its tables stream (docs/reporting.md, "Submissions").
Existing bodies move into chunks byte for byte, and back on downgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CHUNK = 1 << 20
_KEY = ("party", "year", "major", "minor")

_submissions = sa.table(
    "submissions",
    *(sa.column(name) for name in _KEY),
    sa.column("body", sa.LargeBinary()),
    sa.column("size", sa.BigInteger()),
)
_chunks = sa.table(
    "submission_chunks",
    *(sa.column(name) for name in _KEY),
    sa.column("seq", sa.Integer()),
    sa.column("bytes", sa.LargeBinary()),
)


def _where(table: sa.TableClause, key: sa.Row) -> sa.ColumnElement[bool]:
    return sa.and_(*(table.c[name] == value for name, value in zip(_KEY, key, strict=True)))


def upgrade() -> None:
    op.create_table(
        "submission_chunks",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("major", sa.Integer(), nullable=False),
        sa.Column("minor", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["party", "year", "major", "minor"],
            ["submissions.party", "submissions.year", "submissions.major", "submissions.minor"],
            name="fk_submission_chunks_submission",
        ),
        sa.PrimaryKeyConstraint("party", "year", "major", "minor", "seq"),
    )
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
    bind = op.get_bind()
    keys = bind.execute(sa.select(*(_submissions.c[name] for name in _KEY))).all()
    for key in keys:  # one body in memory at a time
        body = bytes(
            bind.execute(sa.select(_submissions.c.body).where(_where(_submissions, key))).scalar_one()
        )
        for seq, offset in enumerate(range(0, len(body), _CHUNK)):
            values = dict(zip(_KEY, key, strict=True))
            bind.execute(sa.insert(_chunks).values(**values, seq=seq, bytes=body[offset : offset + _CHUNK]))
        bind.execute(sa.update(_submissions).where(_where(_submissions, key)).values(size=len(body)))
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("size", existing_type=sa.BigInteger(), nullable=False)
        batch.drop_column("body")


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    keys = bind.execute(sa.select(*(_submissions.c[name] for name in _KEY))).all()
    for key in keys:
        parts = bind.execute(
            sa.select(_chunks.c.bytes).where(_where(_chunks, key)).order_by(_chunks.c.seq)
        ).scalars()
        body = b"".join(bytes(part) for part in parts)
        bind.execute(sa.update(_submissions).where(_where(_submissions, key)).values(body=body))
    with op.batch_alter_table("submissions") as batch:
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_column("size")
    op.drop_table("submission_chunks")
