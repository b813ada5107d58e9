"""Identifier and secret helpers."""

from __future__ import annotations

import hashlib
import secrets
import uuid


def new_id() -> str:
    """A random UUID4 as a string: primary keys that are safe to expose and to merge across replicas."""
    return str(uuid.uuid4())


def new_secret(nbytes: int = 32) -> str:
    """A URL-safe random secret (tokens, agent keys)."""
    return secrets.token_urlsafe(nbytes)


def sha256_hex(data: str | bytes) -> str:
    """SHA-256 hex digest; secrets are stored only in this form."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()
