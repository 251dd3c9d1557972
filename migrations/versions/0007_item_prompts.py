"""per-item prompt, concepts and parameter overrides (per-image work)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    # Nullable, no default: adding them rewrites no rows, however large the items table is.
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prompt', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('prompts', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('params', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('params')
        batch_op.drop_column('prompts')
        batch_op.drop_column('prompt')
