"""Admin commands: `flask --app web create-user EMAIL`, `flask --app web create-token EMAIL`."""

from __future__ import annotations

import secrets

import click
from flask import Flask

from app.services.users import create_token, create_user, get_user, revoke_token, tokens_of


def register(flask_app: Flask) -> None:
    @flask_app.cli.command("create-user")
    @click.argument("email")
    @click.option("--password", default=None, help="Password for the web login (generated if omitted).")
    def create_user_cmd(email: str, password: str | None) -> None:
        """Create an admin user (or reset the password of an existing one)."""
        password = password or secrets.token_urlsafe(12)
        try:
            user = create_user(email, password)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"user {user.email} ready")
        click.echo(f"password: {password}")

    @flask_app.cli.command("create-token")
    @click.argument("email")
    @click.option("--name", default="cli", help="A label for the token.")
    def create_token_cmd(email: str, name: str) -> None:
        """Create an API token for a user; the token is printed once, on the last line."""
        user = get_user(email)
        if user is None:
            raise click.ClickException(f"no user {email}; create it with create-user first")
        click.echo(f"token for {user.email} (shown once; store it now):")
        click.echo(create_token(user, name))

    @flask_app.cli.command("list-tokens")
    @click.argument("email")
    def list_tokens_cmd(email: str) -> None:
        """List a user's tokens by id and prefix (the tokens themselves are not stored)."""
        user = get_user(email)
        if user is None:
            raise click.ClickException(f"no user {email}")
        for row in tokens_of(user):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            click.echo(f"{row.id}\t{row.prefix}…\t{row.name}\t{state}")

    @flask_app.cli.command("revoke-token")
    @click.argument("token_id", type=int)
    def revoke_token_cmd(token_id: int) -> None:
        """Revoke a token by id (see list-tokens); requests with it are refused at once."""
        if not revoke_token(token_id):
            raise click.ClickException(f"no active token with id {token_id}")
        click.echo(f"token {token_id} revoked")
