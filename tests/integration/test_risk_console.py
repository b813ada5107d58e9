"""Console pages Prediction -> Vulnerabilities and Baseline Checks over the real app (TestClient): feed
upload, vulnerability and server views, ignore / unignore, whitelist, scan settings, manual scan, baseline
checks with ignore / verify, weak passwords, password complexity; and the REST API of the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.agent.riskchecks import chunked_records
from hostward.core.ids import new_id, sha256_hex
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCredential
from hostward.manager.app import create_agent_app, create_app
from hostward.manager.baseline import service as baseline
from hostward.manager.context import ManagerContext
from hostward.manager.scans.models import Scan
from hostward.manager.servers.models import Server
from hostward.manager.vulns import service as vulns
from hostward.manager.vulns.models import VulnFinding
from hostward.wire import RawEventBatch, RecordEvent
from tests.fakes.servers import enrolled_server
from tests.integration.test_console_views import app_ctx, flash, post  # noqa: F401
from tests.managerapi import console_login

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "vulns"
PASSWORD = "correct horse battery"


@pytest.fixture
def client(app_ctx: ManagerContext) -> Iterator[TestClient]:  # noqa: F811
    ingest.load_builtin_handlers()
    app = create_app(app_ctx.settings, app_ctx, run_background=False)
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def seed(ctx: ManagerContext) -> str:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name="web-01")
        server.protection_status, server.edition = "opened", "premium"
        sid = server.id
    findings = [
        {
            "key": "Debian:glibc:CVE-9999-0001:",
            "package": "glibc",
            "binaries": ["libc6"],
            "installed_version": "2.36-9+deb12u4",
            "fixed_version": "2.36-9+deb12u999",
            "ids": ["CVE-9999-0001", "HWTEST-2024-0001"],
            "severity": "high",
            "cvss_score": 7.8,
            "ecosystem": "Debian",
            "manager": "dpkg",
            "summary": "glibc buffer overflow",
            "fix_command": "apt-get install --only-upgrade libc6",
        }
    ]
    results = [
        {
            "policy_id": "hostward_ssh",
            "policy_name": "SSH server",
            "check_id": "ssh-root-login",
            "title": "Root login over SSH is disabled",
            "severity": "high",
            "result": "failed",
            "reason": "PermitRootLogin yes",
            "remediation": "Set PermitRootLogin no.",
        },
    ]
    events: list[Any] = [
        *chunked_records(vulns.RECORD_TOPIC, "s1", "findings", findings, 200, now, distro="Debian 12"),
        *chunked_records(baseline.BASELINE_TOPIC, "s1", "results", results, 300, now, enabled=True),
        RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic=baseline.WEAKPASS_TOPIC,
            data={
                "scan_id": "s1",
                "status": "ok",
                "detail": "2 accounts checked, 1 weak",
                "accounts_checked": 2,
                "weak": [{"username": "deploy", "account_type": "normal", "reasons": ["username_derived"]}],
                "hashes": 40,
                "seconds": 4.0,
                "complete": True,
            },
        ),
        RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic=baseline.COMPLEXITY_TOPIC,
            data={
                "module": None,
                "source": "",
                "passed": False,
                "items": [
                    {
                        "id": "min_length",
                        "result": "failed",
                        "value": "not enforced",
                        "suggestion": "install pam_pwquality",
                    }
                ],
            },
        ),
    ]
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        batch = RawEventBatch(events=[json.loads(e.model_dump_json()) for e in events])
        assert {a.status for a in ingest.ingest_batch(s, server, batch, now)} == {"accepted"}
    return sid


def test_vulnerability_pages_and_actions(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    csrf = console_login(client)
    page = client.get("/console/vulnerabilities")
    assert page.status_code == 200
    assert "CVE-9999-0001" in page.text and 'data-nav="vulnerabilities"' in page.text
    assert "No feed imported." in page.text
    servers_view = client.get("/console/vulnerabilities?view=servers")
    assert f'data-server-id="{sid}"' in servers_view.text

    # upload a feed (multipart, with the CSRF token in the form)
    with open(SAMPLES / "malformed.json", "rb") as fh:
        r = client.post(
            "/console/vulnerabilities/feeds",
            data={"csrf": csrf, "next": "/console/vulnerabilities"},
            files={"file": ("malformed.json", fh, "application/json")},
            follow_redirects=True,
        )
    assert flash(r.text).startswith("info: Imported 5 advisories from malformed.json. 5 malformed entries")
    assert 'data-feed="malformed.json"' in r.text

    detail = client.get("/console/vulnerabilities/findings", params={"vuln_id": "CVE-9999-0001"})
    assert "apt-get install --only-upgrade libc6" in detail.text and "whitelist-form" in detail.text
    with app_ctx.uow() as s:
        finding_id = s.scalars(select(VulnFinding.id)).one()
    r = post(
        client,
        csrf,
        "/console/vulnerabilities/handle",
        action="ignore",
        finding_ids=finding_id,
        next="/console/vulnerabilities/findings",
    )
    assert flash(r.text) == "ok: Ignored 1 vulnerability."
    r = post(client, csrf, "/console/vulnerabilities/handle", action="ignore", finding_ids=finding_id)
    assert flash(r.text).startswith("error: ")
    post(client, csrf, "/console/vulnerabilities/handle", action="unignore", finding_ids=finding_id)
    r = post(
        client,
        csrf,
        "/console/vulnerabilities/whitelist",
        vuln_id="HWTEST-2024-0001",
        scope="all",
        remark="accepted",
    )
    assert flash(r.text).startswith("ok: Whitelisted HWTEST-2024-0001: 1 open finding(s) ignored")
    assert 'data-rule="HWTEST-2024-0001"' in r.text
    with app_ctx.uow() as s:
        assert s.get(Server, sid).risk_vulnerabilities == 0  # type: ignore[union-attr]

    r = post(client, csrf, "/console/vulnerabilities/settings", period_days="3", enabled="on")
    assert flash(r.text) == "ok: Scheduled vulnerability scan: every 3 day(s) between 00:00 and 07:00."
    r = post(client, csrf, "/console/vulnerabilities/scan", server_ids=sid)
    assert flash(r.text) == "ok: Vulnerability scan queued on 1 server(s)."
    with app_ctx.uow() as s:
        assert s.scalars(select(Scan.kind).where(Scan.server_id == sid)).all() == ["vulnerability"]


def test_baseline_pages_and_actions(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    csrf = console_login(client)
    page = client.get("/console/baseline")
    assert page.status_code == 200
    assert 'data-check-id="ssh-root-login"' in page.text
    assert 'data-username="deploy"' in page.text and "derived from the user name" in page.text
    assert "install pam_pwquality" in page.text
    check = client.get(
        "/console/baseline/check", params={"policy_id": "hostward_ssh", "check_id": "ssh-root-login"}
    )
    assert "PermitRootLogin yes" in check.text and "Set PermitRootLogin no." in check.text
    with app_ctx.uow() as s:
        result_id = baseline.list_results(s, server_id=sid)[0][0][0].id
    r = post(client, csrf, "/console/baseline/handle", action="ignore", result_ids=result_id)
    assert flash(r.text) == "ok: Ignored 1 check result."
    r = post(
        client,
        csrf,
        "/console/baseline/handle",
        action="verify",
        result_ids=result_id,
        next="/console/baseline/check?policy_id=hostward_ssh&check_id=ssh-root-login",
    )
    assert flash(r.text).startswith("ok: Verifying: baseline scan queued on 1 server")
    assert "Verifying</span>" in r.text
    r = post(client, csrf, "/console/baseline/complexity", action="ignore", server_id=sid)
    assert flash(r.text) == "ok: Password complexity policy ignored."
    with app_ctx.uow() as s:
        # weak password (1) remains; the ignored check and the ignored complexity policy do not count
        assert s.get(Server, sid).risk_baseline == 1  # type: ignore[union-attr]


def test_readonly_users_see_no_change_buttons(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    from hostward.manager.auth import service as auth

    seed(app_ctx)
    with app_ctx.uow() as s:
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="test")
    csrf = console_login(client, "viewer")
    page = client.get("/console/vulnerabilities/findings", params={"vuln_id": "CVE-9999-0001"})
    assert page.status_code == 200 and "batch-vulns" not in page.text
    r = post(client, csrf, "/console/vulnerabilities/settings", period_days="7")
    assert r.status_code == 403


def api_headers(client: TestClient) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_rest_api_and_agent_channel(client: TestClient, app_ctx: ManagerContext) -> None:  # noqa: F811
    sid = seed(app_ctx)
    h = api_headers(client)
    with open(SAMPLES / "debian-tracker.json", "rb") as fh:
        r = client.post("/api/v1/vulns/feeds", headers=h, files={"file": ("tracker.json", fh)})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["advisories"]) == ("tracker.json", 4)
    r = client.post("/api/v1/vulns/feeds", headers=h, files={"file": ("x.json", b"[1, 2]")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "empty_feed"
    r = client.post("/api/v1/vulns/feeds/path", headers=h, json={"path": str(SAMPLES / "osv")})
    assert r.status_code == 200 and r.json()["advisories"] == 5
    for bad in ("/", "/proc/self", "relative/path"):
        assert client.post("/api/v1/vulns/feeds/path", headers=h, json={"path": bad}).status_code == 422
    assert (
        client.post("/api/v1/vulns/feeds/path", headers=h, json={"path": "/nonexistent/x"}).status_code == 404
    )

    stats = client.get("/api/v1/vulns/statistics", headers=h).json()
    assert (stats["unfixed"], stats["advisories"], stats["feeds"]) == (1, 9, 2)
    page = client.get("/api/v1/vulns", headers=h).json()
    assert page["items"][0]["vuln_id"] == "CVE-9999-0001"
    found = client.get("/api/v1/vulns/findings", headers=h, params={"vuln_id": "HWTEST-2024-0001"}).json()
    assert found["total"] == 1 and found["items"][0]["server_name"] == "web-01"
    fid = found["items"][0]["id"]
    r = client.post(
        "/api/v1/vulns/findings/handle", headers=h, json={"finding_ids": [fid, "x"], "action": "ignore"}
    )
    assert [x["ok"] for x in r.json()["results"]] == [True, False]
    rule = client.post(
        "/api/v1/whitelists/vulns", headers=h, json={"vuln_id": "CVE-9999-0002", "server_ids": [sid]}
    )
    assert rule.status_code == 201
    assert client.delete(f"/api/v1/whitelists/vulns/{rule.json()['id']}", headers=h).status_code == 204
    r = client.put("/api/v1/vulns/scan-settings", headers=h, json={"enabled": True, "period_days": 1})
    assert r.json() == {"enabled": True, "period_days": 1}
    assert client.put("/api/v1/vulns/scan-settings", headers=h, json={"period_days": 2}).status_code == 422
    assert client.get("/api/v1/baseline/statistics", headers=h).json()["failed"] == 1
    assert client.get("/api/v1/baseline/checks", headers=h).json()["items"][0]["check_id"] == "ssh-root-login"
    assert client.get("/api/v1/baseline/weak-passwords", headers=h).json()["items"][0]["username"] == "deploy"
    status = client.get("/api/v1/baseline/weak-password-status", headers=h).json()
    assert status[0]["status"] == "ok" and status[0]["weak"] == 1
    assert client.get("/api/v1/baseline/complexity", headers=h).json()[0]["passed"] is False

    # the agent channel: advisories about the agent's packages, as NDJSON
    key = "hwa_" + new_id()
    with app_ctx.uow() as s:
        s.add(
            AgentCredential(
                server_id=sid, key_hash=sha256_hex(key), key_prefix=key[:12], created_at=app_ctx.clock.now()
            )
        )
    agent = TestClient(create_agent_app(app_ctx))
    r = agent.post(
        "/agent/v1/vulns/advisories",
        headers={"Authorization": f"Bearer {key}"},
        json={"packages": [["debian", "glibc"], ["debian", "nothing"]]},
    )
    assert r.status_code == 200 and r.headers["x-hostward-matched"] == "2"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert sorted(li["kind"] for li in lines) == ["debian", "osv"]
    assert agent.post("/agent/v1/vulns/advisories", json={"packages": []}).status_code == 401
