"""The blind arena: a conversation is a chat or an arena battle, and each battle keeps its two models
(model_a was shown as "Model A", on the left) and its one vote.

Revision ID: 0003_arena
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_arena"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations",
                  sa.Column("kind", sa.String(length=16), nullable=False, server_default="chat"))
    op.create_table(
        "arena_battles",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model_a", sa.String(length=128), nullable=False),
        sa.Column("model_b", sa.String(length=128), nullable=False),
        sa.Column("vote", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name=op.f("fk_arena_battles_conversation_id_conversations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_arena_battles_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_arena_battles")),
    )
    op.create_index(op.f("ix_arena_battles_user_id"), "arena_battles", ["user_id"])
    op.create_index(op.f("ix_arena_battles_voted_at"), "arena_battles", ["voted_at"])


def downgrade() -> None:
    op.drop_table("arena_battles")
    # A plain DROP COLUMN (SQLite >= 3.35 has it): copying the table in batch mode would cascade-delete
    # every message while the old table is dropped.
    op.drop_column("conversations", "kind")
