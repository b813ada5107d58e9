"""Set-up the manager domain tests share: a context on either database with the preset policies and the
ingest handlers loaded, and the REST API in process with an ``admin`` and a ``viewer`` (read-only) user,
logged in through the API or the console, and what the console answers to a form."""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostward.manager.agentlink import ingest
from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.deps import SESSION_COOKIE
from hostward.manager.policies import service as policies

PASSWORD = "correct horse battery"


def ready_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    """The ``ctx`` (SQLite) or ``pg_ctx`` (PostgreSQL) fixture as ``request.param`` names the database,
    with the preset policies and the built-in ingest handlers."""
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with context.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    return context


@contextmanager
def api_client(ctx: ManagerContext) -> Iterator[TestClient]:
    """The manager app on ``ctx`` (no background jobs) behind a test client, with users ``admin`` and
    ``viewer`` whose password is ``PASSWORD``."""
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="test")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="test")
    ingest.load_builtin_handlers()
    app = create_app(ctx.settings, ctx, run_background=False)
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def api_login(client: TestClient, user: str = "admin") -> dict[str, str]:
    """Bearer headers of ``user`` logged in through the API."""
    r = client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def console_login(client: TestClient, user: str = "admin") -> str:
    """Log ``user`` in to the console (the session cookie stays on ``client``); the CSRF token its forms
    carry."""
    r = client.post(
        "/console/login", data={"username": user, "password": PASSWORD, "next": ""}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    token = client.cookies.get(SESSION_COOKIE)
    assert token
    return hashlib.sha256(("csrf:" + token).encode()).hexdigest()


def flash_of(text: str) -> str:
    """The flash message on a console page as ``<kind>: <text>`` ("" when there is none)."""
    found = re.search(r'<div class="flash flash-(\w+)"[^>]*>\s*<span>(.*?)</span>', text, re.S)
    return f"{found.group(1)}: {html.unescape(found.group(2))}" if found else ""


def post_form(client: TestClient, csrf: str, url: str, **data: Any) -> str:
    """Post a console form with its CSRF token; the page it leads to (redirects followed)."""
    r = client.post(url, data={"csrf": csrf, **data}, follow_redirects=True)
    assert r.status_code == 200, r.text
    return r.text
