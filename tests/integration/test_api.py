"""REST API behaviour over the real app: auth, roles, rate limiting, error envelope, and a fuzz run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from tests.fakes.servers import enrolled_server

PASSWORD = "correct horse battery"


@pytest.fixture
def app(ctx: ManagerContext) -> FastAPI:
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="test")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="test")
    return create_app(ctx.settings, ctx, run_background=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _login(client: TestClient, user: str = "admin") -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_errors_use_the_envelope(client: TestClient) -> None:
    r = client.get("/api/v1/servers")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    headers = _login(client)
    r = client.get("/api/v1/servers/does-not-exist", headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = client.post(
        "/api/v1/quotas",
        headers=headers,
        content=b"{not json",
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
    r = client.post("/api/v1/quotas", headers=headers, json={"edition": "gold", "count": 1})
    assert r.status_code == 422 and "edition" in r.json()["error"]["message"]
    r = client.get("/api/v1/servers", headers=headers, params={"agent_status": "sleepy"})
    assert r.status_code == 422 and "agent_status" in r.json()["error"]["message"]
    r = client.get("/api/v1/no-such-route", headers=headers)
    assert r.status_code == 404 and "error" in r.json()


def test_login_rate_limit_and_roles(client: TestClient) -> None:
    for _ in range(5):
        r = client.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    viewer = _login(client, "viewer")
    assert client.get("/api/v1/servers", headers=viewer).status_code == 200
    r = client.post("/api/v1/quotas", headers=viewer, json={"edition": "premium", "count": 1})
    assert r.status_code == 403


def test_api_tokens_and_audit(client: TestClient) -> None:
    headers = _login(client)
    r = client.post("/api/v1/tokens", headers=headers, json={"name": "terraform"})
    assert r.status_code == 201
    api = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/api/v1/auth/me", headers=api).json()["username"] == "admin"
    client.delete(f"/api/v1/tokens/{r.json()['id']}", headers=headers)
    assert client.get("/api/v1/auth/me", headers=api).status_code == 401
    actions = {a["action"] for a in client.get("/api/v1/audit", headers=headers).json()["items"]}
    assert {"create_api_token", "revoke_api_token", "login"} <= actions


def test_enable_flow_through_the_api(client: TestClient, ctx: ManagerContext) -> None:
    headers = _login(client)
    with ctx.uow() as s:
        a = enrolled_server(s, ctx.clock.now(), name="web-1").id
        b = enrolled_server(s, ctx.clock.now(), name="web-2").id
    r = client.post("/api/v1/quotas", headers=headers, json={"edition": "premium", "count": 1})
    assert r.status_code == 201
    r = client.post(
        "/api/v1/protection/enable", headers=headers, json={"server_ids": [a, b], "edition": "premium"}
    )
    results = {x["server_id"]: x for x in r.json()["results"]}
    assert results[a]["ok"] and not results[b]["ok"]
    assert results[b]["error"]["code"] == "no_idle_quota"
    servers = {s["name"]: s for s in client.get("/api/v1/servers", headers=headers).json()["items"]}
    assert servers["web-1"]["protection_status"] == "opened"
    assert servers["web-1"]["quota_id"] == results[a]["quota_id"]
    assert servers["web-2"]["protection_status"] == "closed"
    scans = client.get("/api/v1/scans", headers=headers, params={"server_id": a}).json()["items"]
    assert [(x["kind"], x["trigger"]) for x in scans] == [("full", "enable")]
    dash = client.get("/api/v1/dashboard", headers=headers).json()
    assert dash["protected"] == 1 and dash["quotas"]["premium"]["used"] == 1


@pytest.mark.slow
def test_fuzzed_requests_never_cause_server_errors(app: FastAPI, client: TestClient) -> None:
    """Schemathesis generates valid and invalid requests for every operation: none may answer 5xx."""
    token = _login(client)["Authorization"]
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith(("/auth/login", "/auth/logout")):
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case: schemathesis.Case) -> None:
                response = case.call(headers={"Authorization": token})
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # Operations without inputs have no invalid variant to generate.
                assert mode is GenerationMode.NEGATIVE
    assert operations > 30
    assert not failures, "\n".join(failures[:10])
