"""Party sections, their audit trail, accounts, cooperative approaches, authorized entities, NDC periods.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sections",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ars", sa.Boolean(), nullable=False),
        sa.Column("four_eyes", sa.Boolean(), nullable=False),
        sa.Column("confidential_fields", sa.JSON(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.PrimaryKeyConstraint("party"),
        sa.UniqueConstraint("registry_id", name="uq_sections_registry_id"),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("party", sa.String(length=3), nullable=True),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        _utc("at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_party_subject", "audit_log", ["party", "subject", "id"])
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("registry_id", sa.String(length=5), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("type_code", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holder_entity_id", sa.String(length=100), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("party", "type_code", "n", name="uq_accounts_party_type_n"),
        sa.ForeignKeyConstraint(["party"], ["sections.party"], name="fk_accounts_party"),
    )
    op.create_table(
        "cooperative_approaches",
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("ca_id"),
    )
    op.create_table(
        "ca_participants",
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("ca_id", "party"),
        sa.ForeignKeyConstraint(["ca_id"], ["cooperative_approaches.ca_id"], name="fk_ca_participants_ca_id"),
    )
    op.create_index("ix_ca_participants_party", "ca_participants", ["party"])
    op.create_table(
        "authorized_entities",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("country_of_incorporation", sa.String(length=3), nullable=False),
        sa.Column("identification_number", sa.String(length=100), nullable=False),
        sa.Column("ca_id", sa.String(length=6), nullable=False),
        sa.Column("date_of_authorization", sa.Date(), nullable=False),
        sa.Column("conditions", sa.Text(), nullable=True),
        sa.Column("change_and_revocation_conditions", sa.Text(), nullable=True),
        sa.Column("additional_explanatory_information", sa.Text(), nullable=True),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("party", "entity_id"),
        sa.ForeignKeyConstraint(["party"], ["sections.party"], name="fk_authorized_entities_party"),
        sa.ForeignKeyConstraint(
            ["ca_id"], ["cooperative_approaches.ca_id"], name="fk_authorized_entities_ca_id"
        ),
    )
    op.create_table(
        "ndc_periods",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("first_year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_year", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("party", "first_year"),
        sa.ForeignKeyConstraint(["party"], ["sections.party"], name="fk_ndc_periods_party"),
    )


def downgrade() -> None:
    op.drop_table("ndc_periods")
    op.drop_table("authorized_entities")
    op.drop_index("ix_ca_participants_party", table_name="ca_participants")
    op.drop_table("ca_participants")
    op.drop_table("cooperative_approaches")
    op.drop_table("accounts")
    op.drop_index("ix_audit_log_party_subject", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("sections")
