"""webhooks: per-job destination and events, per-user signing secret, delivery outbox and log

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 15:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_secret', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_previous', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('webhook_secret_rotated_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('webhook_events', sa.JSON(), nullable=True))
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', BigId, autoincrement=True, nullable=False),
        sa.Column('msg_id', sa.String(length=40), nullable=False),
        sa.Column('job_id', sa.String(length=36), nullable=False),
        sa.Column('item_id', sa.String(length=36), nullable=True),
        sa.Column('event', sa.String(length=40), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('destination', sa.String(length=300), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('last_latency_ms', sa.Float(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('msg_id'),
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_job_id_id', ['job_id', 'id'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_status_next', ['status', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_status_next')
        batch_op.drop_index('ix_webhook_deliveries_job_id_id')
    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('webhook_events')
        batch_op.drop_column('webhook')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('webhook_secret_rotated_at')
        batch_op.drop_column('webhook_secret_previous')
        batch_op.drop_column('webhook_secret')
