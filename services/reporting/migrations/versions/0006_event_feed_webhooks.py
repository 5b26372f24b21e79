"""The per-Party event feed and webhooks (INTERREGISTRY §9, docs/events.md), and `submissions.announced_at`
(when `aef.submission.created` went into the feed; versions frozen before the feed existed count as
announced, so the feed does not list old submissions as new).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True)


def upgrade() -> None:
    op.add_column("submissions", sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE submissions SET announced_at = submitted_at")
    op.create_index("ix_submissions_unannounced", "submissions", ["announced_at"])
    op.create_table(
        "party_feed_heads",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("party"),
    )
    op.create_table(
        "party_events",
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("party", "position"),
        sa.UniqueConstraint("party", "event_id", name="uq_party_events_event"),
    )
    op.create_index("ix_party_events_type", "party_events", ["party", "type", "position"])
    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.String(length=40), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("previous_secret", sa.String(length=100), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id"),
    )
    op.create_index("ix_webhooks_party", "webhooks", ["party"])
    op.create_table(
        "webhook_deliveries",
        _id(),
        sa.Column("webhook_id", sa.String(length=40), nullable=False),
        sa.Column("party", sa.String(length=3), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.webhook_id"],
            name="fk_webhook_deliveries_webhook",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id", "position", name="uq_webhook_deliveries_item"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook", "webhook_deliveries", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_webhook", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhooks_party", table_name="webhooks")
    op.drop_table("webhooks")
    op.drop_index("ix_party_events_type", table_name="party_events")
    op.drop_table("party_events")
    op.drop_table("party_feed_heads")
    op.drop_index("ix_submissions_unannounced", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("announced_at")
