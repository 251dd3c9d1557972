"""scheduler: job pause and concurrency cap, queue pause, indexes for the window

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 18:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('max_concurrency', sa.Integer(), nullable=True))
    op.create_index(
        'ix_jobs_with_pending', 'jobs', ['created_at'], unique=False,
        postgresql_where=sa.text('n_pending > 0'), sqlite_where=sa.text('n_pending > 0'),
    )
    op.create_index(
        'ix_items_pending_head', 'items', ['job_id', 'queue', 'idx'], unique=False,
        postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        'ix_items_pending_retry', 'items', ['queue', 'idx'], unique=False,
        postgresql_where=sa.text("status = 'pending' AND attempt > 1"),
        sqlite_where=sa.text("status = 'pending' AND attempt > 1"),
    )
    op.create_index(
        'ix_items_in_flight', 'items', ['queue', 'status'], unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        'queue_states',
        sa.Column('queue', sa.String(length=50), nullable=False),
        sa.Column('paused_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('paused_by', sa.Integer(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['paused_by'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('queue'),
    )


def downgrade():
    op.drop_table('queue_states')
    op.drop_index('ix_items_in_flight', table_name='items')
    op.drop_index('ix_items_pending_retry', table_name='items')
    op.drop_index('ix_items_pending_head', table_name='items')
    op.drop_index('ix_jobs_with_pending', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('max_concurrency')
        batch_op.drop_column('paused_at')
