"""Admin commands: `flask --app web create-user EMAIL [--role member]`, `create-token EMAIL [--scope read]`."""

from __future__ import annotations

import secrets

import click
from flask import Flask

from app.services.users import (
    ROLES,
    TOKEN_SCOPES,
    create_token,
    create_user,
    get_user,
    revoke_token,
    set_role,
    tokens_of,
)
from app.services.worker_tokens import create_worker_token, revoke_worker_token, worker_tokens


def register(flask_app: Flask) -> None:
    @flask_app.cli.command("create-user")
    @click.argument("email")
    @click.option("--password", default=None, help="Password for the web login (generated if omitted).")
    @click.option(
        "--role",
        type=click.Choice(ROLES),
        default=None,
        help="admin (users, tokens, queues, every job) or member (submits, changes own jobs). "
        "New users: admin unless given; existing users keep theirs unless given.",
    )
    def create_user_cmd(email: str, password: str | None, role: str | None) -> None:
        """Create a user (or reset the password of an existing one)."""
        password = password or secrets.token_urlsafe(12)
        try:
            user = create_user(email, password, role)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"user {user.email} ready ({user.role})")
        click.echo(f"password: {password}")

    @flask_app.cli.command("set-role")
    @click.argument("email")
    @click.argument("role", type=click.Choice(ROLES))
    def set_role_cmd(email: str, role: str) -> None:
        """Make a user an admin or a member."""
        user = get_user(email)
        if user is None:
            raise click.ClickException(f"no user {email}")
        set_role(user, role)
        click.echo(f"user {user.email} is {role}")

    @flask_app.cli.command("create-token")
    @click.argument("email")
    @click.option("--name", default="cli", help="A label for the token.")
    @click.option(
        "--scope",
        type=click.Choice(TOKEN_SCOPES),
        default="write",
        show_default=True,
        help="write: what the user may do; read: GET only (dashboards, scripts).",
    )
    def create_token_cmd(email: str, name: str, scope: str) -> None:
        """Create an API token for a user; the token is printed once, on the last line."""
        user = get_user(email)
        if user is None:
            raise click.ClickException(f"no user {email}; create it with create-user first")
        click.echo(f"{scope} token for {user.email} (shown once; store it now):")
        click.echo(create_token(user, name, scope))

    @flask_app.cli.command("list-tokens")
    @click.argument("email")
    def list_tokens_cmd(email: str) -> None:
        """List a user's tokens by id and prefix (the tokens themselves are not stored)."""
        user = get_user(email)
        if user is None:
            raise click.ClickException(f"no user {email}")
        for row in tokens_of(user):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            click.echo(f"{row.id}\t{row.prefix}…\t{row.name}\t{row.scope}\t{state}")

    @flask_app.cli.command("revoke-token")
    @click.argument("token_id", type=int)
    def revoke_token_cmd(token_id: int) -> None:
        """Revoke a token by id (see list-tokens); requests with it are refused at once."""
        if not revoke_token(token_id):
            raise click.ClickException(f"no active token with id {token_id}")
        click.echo(f"token {token_id} revoked")

    @flask_app.cli.command("create-worker-token")
    @click.argument("name")
    def create_worker_token_cmd(name: str) -> None:
        """Create a token for GPU/API hosts (BULKGEN_WORKER_TOKEN); printed once, on the last line."""
        try:
            token = create_worker_token(name)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"worker token {name!r} (shown once; put it in the hosts' BULKGEN_WORKER_TOKEN):")
        click.echo(token)

    @flask_app.cli.command("list-worker-tokens")
    def list_worker_tokens_cmd() -> None:
        """List worker tokens by id, prefix and name."""
        for row in worker_tokens():
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            click.echo(f"{row.id}\t{row.prefix}…\t{row.name}\t{state}")

    @flask_app.cli.command("revoke-worker-token")
    @click.argument("token_id", type=int)
    def revoke_worker_token_cmd(token_id: int) -> None:
        """Revoke a worker token by id: its hosts are refused at their next request and stop."""
        if not revoke_worker_token(token_id):
            raise click.ClickException(f"no active worker token with id {token_id}")
        click.echo(f"worker token {token_id} revoked")
