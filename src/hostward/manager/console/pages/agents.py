"""Installation & Configuration -> Agents: enrollment tokens and the one-line install command."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.core.errors import ConfigError, Invalid
from hostward.manager.agentlink import pki
from hostward.manager.agentlink import service as agentlink
from hostward.manager.auth.service import Principal
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Next,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
)

router = APIRouter()


def _fingerprint(request: Request) -> tuple[str | None, str]:
    try:
        return pki.ca_fingerprint(ctx_of(request).settings), ""
    except ConfigError as exc:
        return None, exc.message


def _page(
    request: Request, session: Session, user: Principal, created: dict[str, Any] | None = None
) -> Response:
    ctx = ctx_of(request)
    fingerprint, pki_error = _fingerprint(request)
    now = ctx.clock.now()
    tokens = [(t, agentlink.token_status(t, now)) for t in agentlink.list_enrollment_tokens(session)]
    return render(
        request,
        session,
        user,
        "agents.html",
        active="agents",
        title="Agents",
        tokens=tokens,
        fingerprint=fingerprint,
        pki_error=pki_error,
        agent_url=ctx.settings.effective_agent_url,
        created=created,
        default_hours=ctx.settings.enrollment_token_hours,
        page_url=PREFIX + "/agents",
    )


@router.get("/agents")
def agents_page(request: Request, user: User) -> Response:
    with ctx_of(request).uow() as session:
        return _page(request, session, user)


def _int_or_none(value: str, name: str, low: int, high: int) -> int | None:
    if not value.strip():
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise Invalid(f"{name} must be a whole number") from exc
    if not low <= number <= high:
        raise Invalid(f"{name} must be between {low} and {high}")
    return number


@router.post("/agents/tokens")
def create_token(
    request: Request,
    user: FormOperator,
    hours: Annotated[str, Form(max_length=8)] = "",
    max_uses: Annotated[str, Form(max_length=8)] = "",
    region: Annotated[str, Form(max_length=64)] = "",
    description: Annotated[str, Form(max_length=255)] = "",
    name: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Create a token and show it with its install command once (the token is not stored in clear)."""
    ctx = ctx_of(request)
    fingerprint, pki_error = _fingerprint(request)
    if fingerprint is None:
        raise Invalid(f"the manager has no CA yet ({pki_error}); run 'hostward manager init'")
    lifetime = _int_or_none(hours, "hours", 1, agentlink.MAX_TOKEN_HOURS)
    uses = _int_or_none(max_uses, "max uses", 1, 1_000_000)
    with ctx.uow() as session:
        token, raw = agentlink.create_enrollment_token(
            session,
            now=ctx.clock.now(),
            settings=ctx.settings,
            actor=user.username,
            region=opt(region) or current_region(request),
            hours=lifetime,
            max_uses=uses,
            description=description,
        )
        created = {
            "token": raw,
            "region": token.region,
            "expires_at": token.expires_at,
            "max_uses": token.max_uses,
            "install_command": agentlink.build_install_command(
                ctx.settings.effective_agent_url, raw, fingerprint, opt(name)
            ),
        }
        return _page(request, session, user, created)


@router.post("/agents/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        agentlink.revoke_enrollment_token(session, token_id, now=ctx.clock.now(), actor=user.username)
    return redirect(
        safe_next(next, PREFIX + "/agents"),
        ("ok", "Enrollment token revoked; agents already enrolled keep their own credentials."),
    )
