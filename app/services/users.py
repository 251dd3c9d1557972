"""Users and API tokens. Tokens are random, shown once, and stored as sha256 hashes."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from app.db import db
from app.models import ApiToken, User, utcnow

TOKEN_PREFIX = "bg_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_user(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email.strip().lower()))


ROLES = ("admin", "member")
# "write": everything the token's user may do; "read": GET only, for dashboards and scripts.
TOKEN_SCOPES = ("write", "read")


def create_user(email: str, password: str | None = None, role: str | None = None) -> User:
    """Create a user (an admin unless `role` says otherwise), or reset an existing one's password.

    An existing user's role changes only when `role` is given: resetting a password never promotes."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise ValueError(f"{email!r} is not an email address")
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    user = get_user(email)
    if user is None:
        user = User(email=email, role=role or "admin")
        db.session.add(user)
    elif role is not None:
        user.role = role
    if password:
        user.password_hash = generate_password_hash(password)
    db.session.commit()
    return user


def all_users() -> list[User]:
    return list(db.session.scalars(select(User).order_by(User.email)))


def set_role(user: User, role: str) -> bool:
    """Give `user` the role; False when they already had it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if user.role == role:
        return False
    user.role = role
    db.session.commit()
    return True


def set_active(user: User, active: bool) -> bool:
    """(De)activate `user`: an inactive user's session and tokens stop working at their next request."""
    if user.active == active:
        return False
    user.active = active
    db.session.commit()
    return True


def check_password(user: User, password: str) -> bool:
    return bool(user.active and user.password_hash and check_password_hash(user.password_hash, password))


def create_token(user: User, name: str = "", scope: str = "write") -> str:
    if scope not in TOKEN_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(TOKEN_SCOPES)}, not {scope!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:10], scope=scope)
    )
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
    row = token_row(token)
    return row.user if row is not None else None


def token_row(token: str) -> ApiToken | None:
    """The active token row (with its user loaded) that `token` is, or None."""
    # The token and its user in one query: every API request starts here.
    row = db.session.scalar(
        select(ApiToken).options(joinedload(ApiToken.user)).where(ApiToken.token_hash == hash_token(token))
    )
    if row is None or row.revoked_at is not None or not row.user.active:
        return None
    now = utcnow()
    # Write at most once a minute per token: a write per request would cost every API call.
    last = row.last_used_at
    if (
        last is None
        or (now - (last if last.tzinfo else last.replace(tzinfo=now.tzinfo))).total_seconds() > 60
    ):
        row.last_used_at = now
        db.session.commit()
    return row


def tokens_of(user: User) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def active_tokens() -> list[ApiToken]:
    """Every unrevoked token with its user, for the admins' users page."""
    return list(
        db.session.scalars(
            select(ApiToken)
            .options(joinedload(ApiToken.user))
            .where(ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.user_id, ApiToken.id)
        )
    )


def revoke_token(token_id: int) -> bool:
    row = db.session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    db.session.commit()
    return True
