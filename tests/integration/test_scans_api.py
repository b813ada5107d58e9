"""The scans REST API: roles, validation, filters, paging, cancel, error envelope."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.errors import install_error_handlers
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.scans import service as scans
from hostward.manager.scans.models import SCAN_KINDS, SCAN_STATUSES, SCAN_TRIGGERS
from hostward.manager.scans.routes import router
from hostward.manager.scans.schemas import ScanKind, ScanStatus, ScanTrigger
from tests.conftest import free_port
from tests.fakes.servers import enrolled_server


@pytest.fixture
def api(ctx: ManagerContext) -> Iterator[httpx.Client]:
    """The scans router, mounted as ``create_app`` mounts it, served by a real uvicorn on a free port."""
    app = FastAPI()
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(router, prefix="/api/v1")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def token(ctx: ManagerContext, role: str) -> dict[str, str]:
    with ctx.uow() as s:
        auth.create_user(s, role, "correct-horse", role, actor="test")
    with ctx.uow() as s:
        raw, _tok, _user = auth.login(
            s,
            role,
            "correct-horse",
            client_ip="127.0.0.1",
            now=ctx.clock.now(),
            max_failures=5,
            window_s=300,
            session_hours=1,
        )
    return {"Authorization": f"Bearer {raw}"}


def protected(ctx: ManagerContext, name: str, region: str | None = None) -> str:
    now = ctx.clock.now()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        quotas.add_quotas(
            s, "enterprise", 1, expires_at=None, region=region, now=now, settings=ctx.settings, actor="test"
        )
        sid = enrolled_server(s, now, name=name, region=region).id
    with ctx.uow() as s:
        protection.enable_one(s, sid, "enterprise", now, ctx.settings, actor="test", trigger_scan=False)
    return sid


def test_schema_literals_match_the_model_constants() -> None:
    assert ScanKind.__args__ == SCAN_KINDS  # type: ignore[attr-defined]
    assert ScanStatus.__args__ == SCAN_STATUSES  # type: ignore[attr-defined]
    assert ScanTrigger.__args__ == SCAN_TRIGGERS  # type: ignore[attr-defined]


def test_start_list_show_cancel(api: httpx.Client, ctx: ManagerContext) -> None:
    operator = token(ctx, "operator")
    reader = token(ctx, "readonly")
    a = protected(ctx, "alpha")
    b = protected(ctx, "beta", region="eu-1")

    resp = api.post("/api/v1/scans", json={"server_ids": [a], "kind": "asset"}, headers=operator)
    assert resp.status_code == 201, resp.text
    (created,) = resp.json()["items"]
    assert {k: created[k] for k in ("server_id", "server_name", "kind", "trigger", "status", "progress")} == {
        "server_id": a,
        "server_name": "alpha",
        "kind": "asset",
        "trigger": "manual",
        "status": "queued",
        "progress": 0,
    }
    assert set(created) >= {"id", "detail", "created_at", "started_at", "finished_at"}
    resp = api.post("/api/v1/scans", json={"server_ids": [b]}, headers=operator)
    assert resp.status_code == 201
    assert resp.json()["items"][0]["kind"] == "full"  # comprehensive detection by default

    listing = api.get("/api/v1/scans", headers=reader).json()
    assert listing["total"] == 2
    assert [i["server_name"] for i in listing["items"]] == ["beta", "alpha"]  # newest first
    assert api.get("/api/v1/scans", params={"server_id": a}, headers=reader).json()["total"] == 1
    assert (
        api.get("/api/v1/scans", params={"region": "eu-1"}, headers=reader).json()["items"][0]["server_id"]
        == b
    )
    assert api.get("/api/v1/scans", params={"kind": "asset"}, headers=reader).json()["total"] == 1
    assert api.get("/api/v1/scans", params={"status": "running"}, headers=reader).json()["total"] == 0
    assert api.get("/api/v1/scans", params={"trigger": "manual"}, headers=reader).json()["total"] == 2
    page = api.get("/api/v1/scans", params={"offset": 1, "limit": 1}, headers=reader).json()
    assert (page["total"], page["offset"], page["limit"], len(page["items"])) == (2, 1, 1, 1)
    assert page["items"][0]["server_name"] == "alpha"

    shown = api.get(f"/api/v1/scans/{created['id']}", headers=reader)
    assert shown.status_code == 200 and shown.json()["id"] == created["id"]

    assert api.post(f"/api/v1/scans/{created['id']}/cancel", headers=reader).status_code == 403
    cancelled = api.post(f"/api/v1/scans/{created['id']}/cancel", headers=operator)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    again = api.post(f"/api/v1/scans/{created['id']}/cancel", headers=operator)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "scan_not_active"


def test_roles_and_refusals_use_the_error_envelope(api: httpx.Client, ctx: ManagerContext) -> None:
    operator = token(ctx, "operator")
    reader = token(ctx, "readonly")
    sid = protected(ctx, "gamma")
    with ctx.uow() as s:
        unprotected = enrolled_server(s, ctx.clock.now(), name="delta").id

    assert api.get("/api/v1/scans").status_code == 401
    resp = api.post("/api/v1/scans", json={"server_ids": [sid]}, headers=reader)
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"

    resp = api.post("/api/v1/scans", json={"server_ids": [unprotected]}, headers=operator)
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "server_not_protected"
    assert "delta" in resp.json()["error"]["message"]

    for body in (
        {"server_ids": []},
        {"server_ids": [sid], "kind": "everything"},
        {"kind": "full"},
        {"server_ids": "x"},
    ):
        resp = api.post("/api/v1/scans", json=body, headers=operator)
        assert resp.status_code == 422, body
        assert resp.json()["error"]["code"] == "invalid"
    for params in ({"status": "bogus"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        resp = api.get("/api/v1/scans", params=params, headers=reader)
        assert resp.status_code == 422, params
        assert resp.json()["error"]["code"] == "invalid"

    resp = api.get("/api/v1/scans/nope", headers=reader)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    resp = api.post("/api/v1/scans", json={"server_ids": ["nope"]}, headers=operator)
    assert resp.status_code == 404

    api.post("/api/v1/scans", json={"server_ids": [sid]}, headers=operator)
    resp = api.post("/api/v1/scans", json={"server_ids": [sid]}, headers=operator)
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "scan_in_progress"


def test_timestamps_are_iso8601_utc(api: httpx.Client, ctx: ManagerContext) -> None:
    operator = token(ctx, "operator")
    sid = protected(ctx, "epsilon")
    (item,) = api.post("/api/v1/scans", json={"server_ids": [sid]}, headers=operator).json()["items"]
    with ctx.uow() as s:
        scan = scans.get_scan(s, item["id"])
        assert item["created_at"].replace("Z", "+00:00") == scan.created_at.isoformat()
        assert scan.timeout_at - scan.created_at == timedelta(minutes=30)
