"""Registry clients, key revocation and manual incoming acceptance (INTERREGISTRY §2.2, §2.3, §6): the OAuth2
client ids listed on a registry record, who revoked a registry key and why (a kid may be revoked before any
message used it, so its key and dates become optional), and the pending ranges of an incoming transfer
that awaits the IR Party's decision. (The setting `incoming_acceptance` is party_sections' section
setting, read through the ledger's directory: no table here.)

Existing registry records get an empty client list: after this upgrade the Secretariat lists each
registry's client (`PUT /v1/interregistry/registries/{id}/clients/{client_id}`) before it can send again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("registry") as batch:
        batch.add_column(
            sa.Column(
                "clients",
                sa.JSON(),
                nullable=False,
                server_default=sa.text("'[]'"),
                comment="OAuth2 client ids that may speak for it (1004)",
            )
        )
    with op.batch_alter_table("registry_key") as batch:
        for name, kind in (
            ("jwk", sa.JSON()),
            ("thumbprint", sa.String(length=64)),
            ("first_seen", sa.DateTime(timezone=True)),
            ("last_seen", sa.DateTime(timezone=True)),
        ):
            batch.alter_column(name, existing_type=kind, nullable=True)
        batch.add_column(sa.Column("revoked_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("revocation_note", sa.Text(), nullable=True))
    with op.batch_alter_table("irx_transfer") as batch:
        batch.add_column(
            sa.Column(
                "pending",
                sa.JSON(),
                nullable=True,
                comment="Manual acceptance: the pending_in ranges and what each was before (undone on refusal)",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("irx_transfer") as batch:
        batch.drop_column("pending")
    op.execute("DELETE FROM registry_key WHERE thumbprint IS NULL")
    with op.batch_alter_table("registry_key") as batch:
        batch.drop_column("revocation_note")
        batch.drop_column("revoked_by")
        for name, kind in (
            ("jwk", sa.JSON()),
            ("thumbprint", sa.String(length=64)),
            ("first_seen", sa.DateTime(timezone=True)),
            ("last_seen", sa.DateTime(timezone=True)),
        ):
            batch.alter_column(name, existing_type=kind, nullable=False)
    with op.batch_alter_table("registry") as batch:
        batch.drop_column("clients")
