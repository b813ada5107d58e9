"""API types for enrollment tokens and agent credentials."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from hostward.manager.schemas_common import ApiModel


class EnrollmentTokenIn(BaseModel):
    region: str | None = Field(default=None, max_length=64, description="default: the default region")
    hours: int | None = Field(default=None, ge=1, le=24 * 365, description="default: enrollment_token_hours")
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000, description="default: unlimited")
    description: str = Field(default="", max_length=255)
    name: str | None = Field(
        default=None, max_length=128, description="agent --name to put in the install command (optional)"
    )


class EnrollmentTokenOut(BaseModel):
    id: str
    token: str | None = Field(default=None, description="the secret; returned only when created")
    created_at: datetime
    expires_at: datetime
    max_uses: int | None
    uses: int
    status: str = Field(description="active | expired | revoked | used_up")
    region: str
    description: str
    created_by: str
    ca_fingerprint: str
    agent_url: str
    install_command: str | None = Field(default=None, description="returned only when created")


class CredentialOut(ApiModel):
    id: str
    server_id: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    status: str = Field(description="active | revoked")
