"""Sign in and out, and the region selector in the header."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from hostward.core.errors import HostwardError
from hostward.manager.auth import service as auth
from hostward.manager.console.web import (
    PREFIX,
    REGION_COOKIE,
    FormReader,
    LoginRequired,
    console_user,
    ctx_of,
    redirect,
    safe_next,
    templates_of,
)
from hostward.manager.deps import SESSION_COOKIE, client_ip
from hostward.manager.regions import service as regions

router = APIRouter()


def _login_page(
    request: Request, next_url: str, error: str = "", username: str = "", status: int = 200
) -> Response:
    response = templates_of(request).TemplateResponse(
        request,
        "login.html",
        {"next": next_url, "error": error, "username": username, "prefix": PREFIX, "title": "Sign in"},
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:
    try:
        console_user(request)
    except LoginRequired:
        return _login_page(request, safe_next(next, PREFIX + "/"))
    return RedirectResponse(safe_next(next, PREFIX + "/"), status_code=303)


@router.post("/login")
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    ctx = ctx_of(request)
    s = ctx.settings
    target = safe_next(next, PREFIX + "/")
    if not username or not password:
        return _login_page(request, target, "Enter your user name and password.", username, 400)
    failure: HostwardError | None = None
    with ctx.uow() as session:
        # Caught inside the unit of work: the failed attempt login() recorded must be committed, it is
        # what the rate limit counts.
        try:
            raw, _token, _user = auth.login(
                session,
                username,
                password,
                client_ip=client_ip(request),
                now=ctx.clock.now(),
                max_failures=s.login_max_failures,
                window_s=s.login_failure_window_s,
                session_hours=s.session_hours,
            )
        except HostwardError as exc:
            failure = exc
    if failure is not None:
        return _login_page(request, target, failure.message, username, failure.status)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        raw,
        httponly=True,
        samesite="strict",
        secure=not s.plain_http,
        max_age=s.session_hours * 3600,
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request, user: FormReader) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        auth.logout(session, user)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/region")
def choose_region(
    request: Request,
    _user: FormReader,
    region: Annotated[str, Form(max_length=64)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Remember the region that scopes every page (a view preference, so any role may change it)."""
    target = safe_next(next, PREFIX + "/")
    response = redirect(target)
    if not region:
        response.delete_cookie(REGION_COOKIE, path=PREFIX)
        return response
    name = regions.validate_name(region)
    response.set_cookie(
        REGION_COOKIE, name, httponly=True, samesite="strict", path=PREFIX, max_age=365 * 86400
    )
    return response
