"""job retention markers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 09:12:04.118302

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outputs_expired_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('orphans_swept_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_jobs_finished_at', ['finished_at'], unique=False)


def downgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_finished_at')
        batch_op.drop_column('orphans_swept_at')
        batch_op.drop_column('outputs_expired_at')
