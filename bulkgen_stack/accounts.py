"""The first admin and this machine's worker token, made once and kept under var/ (mode 0600)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulkgen_stack.processes import Stack


def ensure_admin(stack: Stack) -> tuple[str, str, str]:
    """The first admin: email, password and an API token, kept under var/ (mode 0600)."""
    path = stack.var_dir / "admin-credentials"
    if path.exists():
        email, password, token = path.read_text().split("\n")[:3]
        return email, password, token
    email = "admin@example.com"
    password = secrets.token_urlsafe(12)
    stack.flask("create-user", email, "--password", password)
    token = stack.flask("create-token", email, "--name", "embedded").stdout.strip().splitlines()[-1]
    path.write_text(f"{email}\n{password}\n{token}\n")
    path.chmod(0o600)
    return email, password, token


def ensure_worker_token(stack: Stack) -> str:
    """The token this machine's own item workers show for storage grants, kept under var/ (0600)."""
    path = stack.var_dir / "worker-token"
    if path.exists():
        return path.read_text().strip()
    token = stack.flask("create-worker-token", "local workers").stdout.strip().splitlines()[-1]
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token
