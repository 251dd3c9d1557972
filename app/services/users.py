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


def create_user(email: str, password: str | None = None, is_admin: bool = True) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise ValueError(f"{email!r} is not an email address")
    user = get_user(email)
    if user is None:
        user = User(email=email, is_admin=is_admin)
        db.session.add(user)
    if password:
        user.password_hash = generate_password_hash(password)
    db.session.commit()
    return user


def check_password(user: User, password: str) -> bool:
    return bool(user.active and user.password_hash and check_password_hash(user.password_hash, password))


def create_token(user: User, name: str = "") -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user.id, name=name, token_hash=hash_token(token), prefix=token[:10]))
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
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
    return row.user


def tokens_of(user: User) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def revoke_token(token_id: int) -> bool:
    row = db.session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    db.session.commit()
    return True
