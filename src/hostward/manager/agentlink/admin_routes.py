"""REST API (/api/v1) for enrollment tokens and the per-agent credentials shown on a server's page."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from hostward.manager.agentlink import pki, service
from hostward.manager.agentlink.models import AgentCredential, EnrollmentToken
from hostward.manager.agentlink.schemas import CredentialOut, EnrollmentTokenIn, EnrollmentTokenOut
from hostward.manager.deps import Ctx, Operator, Reader

router = APIRouter(tags=["enrollment"])


def _token_out(
    token: EnrollmentToken,
    now: datetime,
    fingerprint: str,
    agent_url: str,
    raw: str | None = None,
    name: str | None = None,
) -> EnrollmentTokenOut:
    return EnrollmentTokenOut(
        id=token.id,
        token=raw,
        created_at=token.created_at,
        expires_at=token.expires_at,
        max_uses=token.max_uses,
        uses=token.uses,
        status=service.token_status(token, now),
        region=token.region,
        description=token.description,
        created_by=token.created_by,
        ca_fingerprint=fingerprint,
        agent_url=agent_url,
        install_command=service.build_install_command(agent_url, raw, fingerprint, name) if raw else None,
    )


def _credential_out(cred: AgentCredential) -> CredentialOut:
    return CredentialOut(
        id=cred.id,
        server_id=cred.server_id,
        key_prefix=cred.key_prefix,
        created_at=cred.created_at,
        revoked_at=cred.revoked_at,
        last_used_at=cred.last_used_at,
        status="revoked" if cred.revoked_at else "active",
    )


@router.post("/enrollment-tokens", response_model=EnrollmentTokenOut, status_code=201)
def create_token(body: EnrollmentTokenIn, principal: Operator, ctx: Ctx) -> EnrollmentTokenOut:
    """Create an enrollment token; the token and the install command are shown only in this response."""
    fingerprint = pki.ca_fingerprint(ctx.settings)
    now = ctx.clock.now()
    with ctx.uow() as s:
        token, raw = service.create_enrollment_token(
            s,
            now=now,
            settings=ctx.settings,
            actor=principal.username,
            region=body.region,
            hours=body.hours,
            max_uses=body.max_uses,
            description=body.description,
        )
        return _token_out(token, now, fingerprint, ctx.settings.effective_agent_url, raw, body.name)


@router.get("/enrollment-tokens", response_model=list[EnrollmentTokenOut])
def list_tokens(_p: Reader, ctx: Ctx) -> list[EnrollmentTokenOut]:
    fingerprint = pki.ca_fingerprint(ctx.settings)
    now = ctx.clock.now()
    with ctx.uow() as s:
        return [
            _token_out(t, now, fingerprint, ctx.settings.effective_agent_url)
            for t in service.list_enrollment_tokens(s)
        ]


@router.delete("/enrollment-tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as s:
        service.revoke_enrollment_token(s, token_id, now=ctx.clock.now(), actor=principal.username)


@router.get("/servers/{server_id}/credentials", response_model=list[CredentialOut])
def list_credentials(server_id: str, _p: Reader, ctx: Ctx) -> list[CredentialOut]:
    with ctx.uow() as s:
        return [_credential_out(c) for c in service.list_credentials(s, server_id)]


@router.post("/servers/{server_id}/credentials/{cred_id}/revoke", response_model=CredentialOut)
def revoke_credential(server_id: str, cred_id: str, principal: Operator, ctx: Ctx) -> CredentialOut:
    with ctx.uow() as s:
        cred = service.revoke_credential(s, server_id, cred_id, now=ctx.clock.now(), actor=principal.username)
        return _credential_out(cred)
