"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "couple",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("change_stamp", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "delivery_stat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("sms", "email", name="channel", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "scheduled",
                "sending",
                "sent",
                "delivered",
                "undelivered",
                "failed",
                "skipped",
                "expired",
                "cancelled",
                name="reminderstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("day", "channel", "state"),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=True),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_couple_id"), ["couple_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_created_at"), ["created_at"], unique=False)

    op.create_table(
        "prompt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "check_in",
                "gratitude",
                "repair",
                "date_night",
                "custom",
                name="ritualkind",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("text", sa.String(length=300), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "text"),
    )
    op.create_table(
        "partner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("channels", sa.String(length=40), nullable=False),
        sa.Column("quiet_start", sa.Time(), nullable=True),
        sa.Column("quiet_end", sa.Time(), nullable=True),
        sa.Column(
            "sms_consent",
            sa.Enum(
                "unknown",
                "consented",
                "opted_out",
                name="consentstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("sms_consent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sms_consent_source", sa.String(length=60), nullable=True),
        sa.Column("email_opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_text", sa.Boolean(), nullable=False),
        sa.Column("feed_token_hash", sa.String(length=64), nullable=True),
        sa.Column("feed_token_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unsubscribe_token", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("couple_id", "name"),
        sa.UniqueConstraint("feed_token_hash"),
        sa.UniqueConstraint("unsubscribe_token"),
    )
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partner_phone"), ["phone"], unique=False)

    op.create_table(
        "ritual",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=80), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "check_in",
                "gratitude",
                "repair",
                "date_night",
                "custom",
                name="ritualkind",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("template", sa.String(length=40), nullable=True),
        sa.Column("title", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("dtstart_date", sa.Date(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=True),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("rrule", sa.String(length=300), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("reminder_offsets", sa.String(length=80), nullable=False),
        sa.Column("channels", sa.String(length=40), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uid"),
    )
    with op.batch_alter_table("ritual", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ritual_couple_id"), ["couple_id"], unique=False)

    op.create_table(
        "check_in",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ritual_id", sa.Integer(), nullable=False),
        sa.Column("occurrence_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ritual_id", "occurrence_start", "partner_id"),
    )
    op.create_table(
        "consent_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("sms", "email", name="channel", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "unknown",
                "consented",
                "opted_out",
                name="consentstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=60), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_record_partner_id"), ["partner_id"], unique=False
        )

    op.create_table(
        "occurrence_exception",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ritual_id", sa.Integer(), nullable=False),
        sa.Column("original_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("skip", "move", name="exceptionkind", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("new_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ritual_id", "original_start"),
    )
    op.create_table(
        "prompt_rotation",
        sa.Column("ritual_id", sa.Integer(), nullable=False),
        sa.Column("remaining", sa.JSON(), nullable=False),
        sa.Column("last_prompt_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ritual_id"),
    )
    op.create_table(
        "reminder",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("ritual_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("sms", "email", name="channel", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("offset_minutes", sa.Integer(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "nudge",
                "snooze",
                "invite",
                "followup",
                "chase",
                name="reminderpurpose",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("occurrence_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "scheduled",
                "sending",
                "sent",
                "delivered",
                "undelivered",
                "failed",
                "skipped",
                "expired",
                "cancelled",
                name="reminderstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claim_token", sa.String(length=36), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("provider_message_id", sa.String(length=120), nullable=True),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "ritual_id",
            "occurrence_start",
            "partner_id",
            "channel",
            "offset_minutes",
            "purpose",
            name="uq_reminder_slot",
        ),
    )
    with op.batch_alter_table("reminder", schema=None) as batch_op:
        batch_op.create_index("ix_reminder_couple_state", ["couple_id", "state"], unique=False)
        batch_op.create_index("ix_reminder_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_reminder_provider_message_id"), ["provider_message_id"], unique=False
        )

    op.create_table(
        "repair_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "scheduled",
                "no_slot",
                "cancelled",
                "done",
                name="repairstate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("slot_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ritual_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=30), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["requested_by"], ["partner.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("repair_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_repair_request_couple_id"), ["couple_id"], unique=False
        )

    op.create_table(
        "reply",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("couple_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column(
            "channel",
            sa.Enum("sms", "email", name="channel", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("provider_message_id", sa.String(length=120), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("keyword", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("ritual_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["couple_id"], ["couple.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ritual_id"], ["ritual.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_message_id"),
    )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reply_couple_id"), ["couple_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_reply_received_at"), ["received_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reply_received_at"))
        batch_op.drop_index(batch_op.f("ix_reply_couple_id"))

    op.drop_table("reply")
    with op.batch_alter_table("repair_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repair_request_couple_id"))

    op.drop_table("repair_request")
    with op.batch_alter_table("reminder", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reminder_provider_message_id"))
        batch_op.drop_index("ix_reminder_due")
        batch_op.drop_index("ix_reminder_couple_state")

    op.drop_table("reminder")
    op.drop_table("prompt_rotation")
    op.drop_table("occurrence_exception")
    with op.batch_alter_table("consent_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_record_partner_id"))

    op.drop_table("consent_record")
    op.drop_table("check_in")
    with op.batch_alter_table("ritual", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ritual_couple_id"))

    op.drop_table("ritual")
    with op.batch_alter_table("partner", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_phone"))

    op.drop_table("partner")
    op.drop_table("prompt")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_created_at"))
        batch_op.drop_index(batch_op.f("ix_event_couple_id"))

    op.drop_table("event")
    op.drop_table("delivery_stat")
    op.drop_table("couple")
