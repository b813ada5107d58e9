"""Request plumbing shared by every console page: session, CSRF, roles, region, flash, paging, render.

The console authenticates with the ``hw_session`` cookie only (never a bearer header). Every POST form
carries a CSRF token derived from the session token, checked before the role; a read-only user gets 403
on any changing POST and never sees change buttons (templates ask ``can('operator')``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from hostward.core.errors import Forbidden, Unauthorized
from hostward.manager.auth import service as auth
from hostward.manager.auth.service import Principal
from hostward.manager.context import ManagerContext
from hostward.manager.deps import SESSION_COOKIE
from hostward.manager.regions import service as regions

PREFIX = "/console"
REGION_COOKIE = "hw_region"
FLASH_COOKIE = "hw_flash"
PAGE_SIZES = (10, 20, 50, 100, 200)
DEFAULT_PAGE_SIZE = 20
_REGION_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_FLASH_MAX = 1500


class LoginRequired(Exception):
    """No valid console session: the page redirects to the login form."""


def ctx_of(request: Request) -> ManagerContext:
    ctx: ManagerContext = request.app.state.ctx
    return ctx


def templates_of(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def csrf_token(session_token: str) -> str:
    """The per-session CSRF token: a hash of the session token, so nothing extra is stored."""
    return hashlib.sha256(("csrf:" + session_token).encode()).hexdigest()


def console_user(request: Request) -> Principal:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        raise LoginRequired
    ctx = ctx_of(request)
    try:
        with ctx.uow() as session:
            return auth.resolve_token(session, raw, now=ctx.clock.now())
    except Unauthorized as exc:
        raise LoginRequired from exc


User = Annotated[Principal, Depends(console_user)]


async def _csrf_checked(request: Request, user: User) -> Principal:
    form = await request.form()
    sent = form.get("csrf")
    expected = csrf_token(request.cookies.get(SESSION_COOKIE, ""))
    if not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise Forbidden("missing or invalid CSRF token; reload the page and try again", code="csrf")
    return user


def _poster(role: str) -> Any:
    def check(user: Annotated[Principal, Depends(_csrf_checked)]) -> Principal:
        if not user.can(role):
            raise Forbidden(f"this action needs the {role} role")
        return user

    return check


# Principals for changing POSTs: CSRF token checked, then the role.
FormReader = Annotated[Principal, Depends(_poster("readonly"))]
FormOperator = Annotated[Principal, Depends(_poster("operator"))]
FormAdmin = Annotated[Principal, Depends(_poster("admin"))]

# Parameter types every page uses: a list filter from the query string (pages with a tighter limit
# declare their own) and the form field naming the page to go back to.
Filter = Annotated[str | None, Query(max_length=256)]
Next = Annotated[str, Form(max_length=2000)]


def current_region(request: Request) -> str | None:
    """The region chosen in the header (cookie); None = all regions."""
    value = request.cookies.get(REGION_COOKIE, "")
    return value if _REGION_RE.match(value) else None


def opt(value: str | None) -> str | None:
    """Query/form values: empty string means "not given"."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def safe_next(value: str | None, default: str) -> str:
    """Only redirect to console pages on this site (no open redirects)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


def here(request: Request) -> str:
    """The current page's path and query, used as ``next`` in forms."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


# ---- flash messages (one-shot, in a cookie) ---------------------------------------------------------


def set_flash(response: Response, kind: str, text: str) -> None:
    payload = json.dumps({"kind": kind, "text": text[:_FLASH_MAX]})
    encoded = base64.urlsafe_b64encode(payload.encode()).decode()
    response.set_cookie(FLASH_COOKIE, encoded, httponly=True, samesite="strict", path=PREFIX)


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("kind") not in ("ok", "error", "info"):
        return None
    return {"kind": str(data["kind"]), "text": str(data.get("text", ""))[:_FLASH_MAX]}


def redirect(url: str, flash: tuple[str, str] | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        set_flash(response, *flash)
    return response


# ---- paging -----------------------------------------------------------------------------------------


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return max(low, min(high, value))


@dataclass
class Pager:
    """Page number and size from the query string; builds links that keep the other parameters."""

    request: Request
    page: int
    size: int
    total: int = 0

    @classmethod
    def of(cls, request: Request, default_size: int = DEFAULT_PAGE_SIZE) -> Pager:
        size = int_param(request, "size", default_size, 1, 200)
        if size not in PAGE_SIZES:
            size = default_size
        return cls(request, int_param(request, "page", 1, 1, 100_000), size)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def first_item(self) -> int:
        return 0 if self.total == 0 else self.offset + 1

    @property
    def last_item(self) -> int:
        return min(self.total, self.offset + self.size)

    def url(self, page: int | None = None, **changes: Any) -> str:
        params = {k: v for k, v in self.request.query_params.items() if k not in changes}
        params.update({k: str(v) for k, v in changes.items() if v not in (None, "")})
        params["page"] = str(page if page is not None else 1)
        if params["page"] == "1":
            del params["page"]
        return self.request.url.path + ("?" + urlencode(params) if params else "")

    def window(self) -> list[int | None]:
        """Page numbers to show: first, last and neighbours of the current page (None = gap)."""
        wanted = {1, self.pages, *range(self.page - 2, self.page + 3)}
        out: list[int | None] = []
        previous = 0
        for n in sorted(p for p in wanted if 1 <= p <= self.pages):
            if n - previous > 1:
                out.append(None)
            out.append(n)
            previous = n
        return out


def sort_url(request: Request, value: str) -> str:
    """This page sorted by ``value`` (back to the first page, other parameters kept)."""
    params = dict(request.query_params)
    params.pop("page", None)
    params["sort"] = value
    return request.url.path + "?" + urlencode(params)


# ---- rendering --------------------------------------------------------------------------------------


def render(
    request: Request,
    session: Session,
    user: Principal,
    template: str,
    *,
    active: str,
    title: str,
    status_code: int = 200,
    page_url: str | None = None,
    **values: Any,
) -> Response:
    """Render a page inside the console layout (header, navigation, flash message).

    ``page_url`` is where forms on the page come back to; it defaults to the current URL and must be
    given when a POST renders a page (the POST URL cannot be reloaded with GET).
    """
    flash = read_flash(request)
    context = {
        "user": user,
        "can": user.can,
        "csrf": csrf_token(request.cookies.get(SESSION_COOKIE, "")),
        "region": current_region(request),
        "regions": [r.name for r in regions.list_regions(session)],
        "flash": flash,
        "active": active,
        "title": title,
        "here": page_url or here(request),
        "prefix": PREFIX,
        **values,
    }
    response = templates_of(request).TemplateResponse(request, template, context, status_code=status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def templates_dir() -> Path:
    return Path(__file__).parent / "templates"


def static_dir() -> Path:
    return Path(__file__).parent / "static"
