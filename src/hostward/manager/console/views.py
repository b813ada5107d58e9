"""The web console: server-rendered pages under ``/console`` (Jinja2, plain JavaScript, one CSS file).

The console is a sub-application mounted at ``/console`` so that it has its own error handling (HTML
pages and flash messages instead of the API's JSON envelope) and stays out of the OpenAPI schema.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostward.core.errors import Forbidden, HostwardError, Unauthorized
from hostward.manager.console import present
from hostward.manager.console.web import (
    PREFIX,
    LoginRequired,
    redirect,
    safe_next,
    static_dir,
    templates_dir,
)
from hostward.manager.context import ManagerContext

log = logging.getLogger("hostward.console")

# No inline scripts anywhere in the console: scripts only from /console/static. Inline style attributes
# (progress bar widths, chart colours) are the one relaxation.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """Adds the console's security headers to every response (pure ASGI, no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    present.install(env)
    return Jinja2Templates(env=env)


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "error.html",
        {"title": title, "message": message, "status": status, "prefix": PREFIX},
        status_code=status,
    )


def build_console(ctx: ManagerContext) -> FastAPI:
    """The console sub-application (routes, static files, HTML error handling)."""
    from hostward.manager.console.pages import (
        agents,
        alarms,
        baseline,
        dashboard,
        fim,
        history,
        login,
        loginsec,
        malware,
        notifications,
        policies,
        quotas,
        ransomware,
        server_detail,
        servers,
        vulns,
        wtp,
    )

    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state.ctx = ctx
    console.state.templates = _templates()
    for module in (
        login, dashboard, servers, server_detail, quotas, agents, vulns, baseline, fim, alarms, loginsec,
        malware, policies, history, notifications, wtp, ransomware,
    ):  # fmt: skip
        console.include_router(module.router)
    console.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    console.add_middleware(SecurityHeaders)

    @console.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = PREFIX + "/"
        return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='/')}", status_code=303)

    @console.exception_handler(HostwardError)
    async def _hostward(request: Request, exc: HostwardError) -> Response:
        # A refused change comes back to the page it was made from, with the reason on top.
        if request.method == "POST" and not isinstance(exc, Forbidden | Unauthorized):
            form = await request.form()
            next_url = form.get("next")
            return redirect(
                safe_next(next_url if isinstance(next_url, str) else None, PREFIX + "/"),
                ("error", exc.message),
            )
        titles = {403: "Not allowed", 404: "Not found", 401: "Not signed in"}
        return _error_page(request, exc.status, titles.get(exc.status, "Request refused"), exc.message)

    @console.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
            parts.append(f"{loc or 'input'}: {err.get('msg', 'invalid')}")
        return _error_page(request, 422, "Invalid input", "; ".join(parts) or "invalid input")

    @console.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        title = "Not found" if exc.status_code == 404 else "Request refused"
        return _error_page(request, exc.status_code, title, str(exc.detail))

    @console.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("console error", exc_info=exc)
        return _error_page(request, 500, "Internal error", "The manager could not complete this request.")

    return console


def mount_console(app: FastAPI) -> None:
    """Mount the console at ``/console`` and redirect ``/`` there."""
    console = build_console(app.state.ctx)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    def _console_root() -> RedirectResponse:
        return RedirectResponse(PREFIX + "/", status_code=307)

    app.mount(PREFIX, console)


__all__ = ["build_console", "mount_console"]
