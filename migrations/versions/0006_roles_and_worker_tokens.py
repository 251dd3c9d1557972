"""roles, token scopes, idempotency request hashes (admin / member / read-only tokens), and worker tokens for GPU hosts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=20), nullable=False, server_default='member'))
    # Everyone was an administrator before roles existed: keep it so, an admin then narrows it.
    op.execute("UPDATE users SET role = CASE WHEN is_admin THEN 'admin' ELSE 'member' END")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('is_admin')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scope', sa.String(length=10), nullable=False, server_default='write'))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        # sha256 of the submission an idempotency key was first used with: the same key with
        # another body is a conflict, not the first job.
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
    op.create_table(
        'worker_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['users.id'], ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
    )


def downgrade():
    op.drop_table('worker_tokens')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('request_hash')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('scope')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_admin', sa.Boolean(), nullable=False, server_default=sa.true()))
    op.execute("UPDATE users SET is_admin = (role = 'admin')")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('role')
