"""template versions as sent

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:30:00.000000

``template_versions`` keeps the text of every file an email was built from, once per version (the
first time a message built from it is recorded), and ``outbox.template_version`` names the version
each row was last built from. So `nurture templates impact` can compare the templates on disk with
what people last received, and `explain` can say which version a person got. Rows sent before this
revision have no version (null): the preview says those steps were "not sent with a kept version".
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("template", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("template", "digest"),
    )
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("template_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("template_version")
    op.drop_table("template_versions")
