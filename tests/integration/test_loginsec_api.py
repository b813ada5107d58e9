"""Login security over HTTP: the REST API (errors name the bad entry, roles, unblock results), the
console pages and their forms, and the CLI against a real manager process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostward.core.ids import new_id
from hostward.manager.agentlink.ingest import ingest_batch, load_builtin_handlers
from hostward.manager.alarms import service as alarms
from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec import service as loginsec
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent, RawEventBatch, RecordEvent
from tests.fakes.servers import enrolled_server
from tests.managerapi import PASSWORD, api_login, console_login, flash_of, post_form
from tests.procs import Manager, as_json, hostward, login, ok, one_line_error, running_manager


@pytest.fixture
def seeded(ctx: ManagerContext) -> dict[str, str]:
    """Users, a premium server with a blocked source and its brute-force alarm."""
    load_builtin_handlers()
    now = ctx.clock.now()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        auth.create_user(s, "admin", PASSWORD, "admin", actor="t")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="t")
        auth.create_user(s, "ops", PASSWORD, "operator", actor="t")
        quotas.add_quotas(
            s, "premium", 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        server = enrolled_server(s, now, name="web-1")
        protection.enable_one(s, server.id, "premium", now, ctx.settings, actor="t", trigger_scan=False)
        until = (now + timedelta(hours=12)).isoformat()
        block = RecordEvent(
            key=new_id(),
            occurred_at=now,
            topic="blocked_ip",
            data={"action": "blocked", "network": "203.0.113.7/32", "service": "sshd", "until": until},
        )
        ingest_batch(s, server, RawEventBatch(events=[block.model_dump(mode="json")]), now)
        alarm = alarms.ingest(
            s,
            server,
            AlarmEvent(
                key=new_id(),
                occurred_at=now,
                event_class="login_0001",
                title="Brute-force attack on sshd from 203.0.113.7",
                fingerprint="login_0001:sshd:203.0.113.7/32",
                evidence={"login_ip": "203.0.113.7", "network": "203.0.113.7/32", "blocked": True},
            ),
            now,
        )
        return {"server_id": server.id, "alarm_id": alarm.id}


@pytest.fixture
def client(ctx: ManagerContext, seeded: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(ctx.settings, ctx, run_background=False)
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def test_api_whitelists_errors_and_roles(client: TestClient, seeded: dict[str, str]) -> None:
    api, viewer = api_login(client), api_login(client, "viewer")
    sid = seeded["server_id"]
    r = client.post("/api/v1/whitelists/login", headers=api, json={"ips": "10.0.0.1, 10.0.0.999"})
    assert r.status_code == 422 and "'10.0.0.999'" in r.json()["error"]["message"]
    r = client.post("/api/v1/whitelists/login", headers=api, json={"ips": ["fd00::/129"]})
    assert r.status_code == 422 and "'fd00::/129'" in r.json()["error"]["message"]
    r = client.post("/api/v1/whitelists/login", headers=viewer, json={"ips": "10.0.0.1"})
    assert r.status_code == 403
    r = client.post(
        "/api/v1/whitelists/login",
        headers=api,
        json={"ips": ["198.51.100.0/24", "2001:db8::1"], "server_ids": [sid], "remarks": "office"},
    )
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["networks"] == ["198.51.100.0/24", "2001:db8::1/128"] and entry["server_ids"] == [sid]
    assert [e["id"] for e in client.get("/api/v1/whitelists/login", headers=viewer).json()] == [entry["id"]]
    r = client.post("/api/v1/whitelists/login", headers=api, json={"ips": "1.1.1.1", "server_ids": ["nope"]})
    assert r.status_code == 404

    r = client.put(
        f"/api/v1/servers/{sid}/ssh-ip-whitelist",
        headers=api,
        json={"items": [{"network": f"10.1.0.{i}"} for i in range(11)]},
    )
    assert r.status_code == 422 and "at most 10" in r.json()["error"]["message"]
    r = client.put(
        f"/api/v1/servers/{sid}/ssh-ip-whitelist", headers=api, json={"items": [{"network": "nope"}]}
    )
    assert r.status_code == 422 and "'nope'" in r.json()["error"]["message"]
    r = client.put(
        f"/api/v1/servers/{sid}/ssh-ip-whitelist",
        headers=api,
        json={"items": [{"network": "10.1.0.1"}, {"network": "fd00:1::/64", "enabled": False}]},
    )
    assert r.status_code == 200 and [i["network"] for i in r.json()["items"]] == [
        "10.1.0.1/32",
        "fd00:1::/64",
    ]
    rows = client.get("/api/v1/whitelists/ssh-ip", headers=viewer).json()
    assert {(x["server_name"], x["enabled"]) for x in rows} == {("web-1", True), ("web-1", False)}
    assert client.get("/api/v1/servers/nope/ssh-ip-whitelist", headers=viewer).status_code == 404

    r = client.put("/api/v1/settings/common-login-ips", headers=api, json={"items": ["198.51.100.4", "bad"]})
    assert r.status_code == 422 and "'bad'" in r.json()["error"]["message"]
    r = client.put("/api/v1/settings/common-login-ips", headers=api, json={"items": ["198.51.100.4"]})
    assert r.json() == {"items": ["198.51.100.4"], "max_items": 20}
    r = client.put("/api/v1/settings/common-login-locations", headers=api, json={"items": ["Germany"]})
    assert client.get("/api/v1/settings/common-login-locations", headers=viewer).json()["items"] == [
        "Germany"
    ]
    r = client.put("/api/v1/settings/login-geolocation", headers=api_login(client, "ops"), json={"table": []})
    assert r.status_code == 403  # admin only
    r = client.put(
        "/api/v1/settings/login-geolocation",
        headers=api,
        json={"table": [{"network": "nonsense", "location": "X"}]},
    )
    assert r.status_code == 422 and "'nonsense'" in r.json()["error"]["message"]


def test_api_blocked_ips_and_login_alarm_actions(client: TestClient, seeded: dict[str, str]) -> None:
    api, viewer = api_login(client), api_login(client, "viewer")
    page = client.get("/api/v1/blocked-ips", headers=viewer, params={"status": "blocked"}).json()
    assert page["total"] == 1
    (row,) = page["items"]
    assert (row["source"], row["server_name"], row["status"]) == ("203.0.113.7", "web-1", "blocked")
    assert client.get("/api/v1/blocked-ips", headers=viewer, params={"status": "gone"}).status_code == 422
    assert (
        client.post("/api/v1/blocked-ips/unblock", headers=viewer, json={"ids": [row["id"]]}).status_code
        == 403
    )
    r = client.post(
        "/api/v1/alarms/login-actions",
        headers=api,
        json={"alarm_ids": [seeded["alarm_id"]], "action": "add_to_login_whitelist"},
    )
    assert r.json()["results"][0]["ok"], r.text
    assert (
        client.get("/api/v1/blocked-ips/statistics", headers=viewer).json()["blocked"] == 1
    )  # not unblocked
    r = client.post("/api/v1/blocked-ips/unblock", headers=api, json={"ids": [row["id"], "missing"]})
    assert r.status_code == 200
    results = {x["id"]: x for x in r.json()["results"]}
    assert results[row["id"]]["ok"] and results["missing"]["error"]["code"] == "not_found"
    after = client.get("/api/v1/blocked-ips", headers=viewer).json()["items"][0]
    assert after["status"] == "unblocking"
    r = client.post("/api/v1/blocked-ips/unblock", headers=api, json={"ids": []})
    assert r.status_code == 422


# ---- console ----


def test_console_pages_and_forms(client: TestClient, ctx: ManagerContext, seeded: dict[str, str]) -> None:
    csrf = console_login(client)
    sid = seeded["server_id"]
    page = client.get("/console/blocked-ips")
    assert page.status_code == 200
    assert "203.0.113.7" in page.text and 'data-status="blocked"' in page.text
    assert 'href="/console/blocked-ips"' in page.text and 'href="/console/security-config"' in page.text
    (row_id,) = re.findall(r'data-blocked-id="([^"]+)"', page.text)
    text = post_form(client, csrf, "/console/blocked-ips/unblock", ids=row_id, next="/console/blocked-ips")
    assert flash_of(text).startswith("ok: 1 block being lifted")
    assert 'data-status="unblocking"' in text

    config = client.get("/console/security-config", params={"server_id": sid})
    assert config.status_code == 200 and "SSH login IP whitelist" in config.text
    text = post_form(
        client,
        csrf,
        "/console/security-config/login-whitelist",
        ips="10.0.0.1, 10.0.0.x",
        next="/console/security-config",
    )
    assert flash_of(text) == "error: login whitelist entry '10.0.0.x': not an IP address, CIDR or range"
    text = post_form(
        client,
        csrf,
        "/console/security-config/login-whitelist",
        ips="198.51.100.0/24",
        servers="web-1",
        username="",
        remarks="office",
        next="/console/security-config",
    )
    assert flash_of(text).startswith("ok: Login whitelist entry added") and "198.51.100.0/24" in text
    here = f"/console/security-config?server_id={sid}"
    text = post_form(
        client,
        csrf,
        f"/console/security-config/ssh-ip/{sid}",
        action="add",
        network="10.2.0.9",
        enabled="on",
        next=here,
    )
    assert "SSH only from 1 address" in flash_of(text) and 'data-network="10.2.0.9/32"' in text
    text = post_form(
        client,
        csrf,
        f"/console/security-config/ssh-ip/{sid}",
        action="disable",
        network="10.2.0.9/32",
        next=here,
    )
    assert "open to every address" in flash_of(text)
    text = post_form(
        client, csrf, f"/console/security-config/ssh-ip/{sid}", action="add", network="10.2.0.300", next=here
    )
    assert flash_of(text).startswith("error: SSH login IP whitelist entry '10.2.0.300'")
    text = post_form(
        client, csrf, "/console/security-config/common-ips", items="198.51.100.4\n2001:db8::/64", next=here
    )
    assert flash_of(text) == "ok: 2 common login IP(s) saved."
    text = post_form(
        client, csrf, "/console/security-config/common-locations", items="Germany\nFrance", next=here
    )
    assert flash_of(text) == "ok: 2 common login location(s) saved."
    with ctx.uow() as s:
        assert loginsec.common_locations(s) == ["Germany", "France"]
        section = policies.bundle_for(s, s.get(Server, sid)).global_settings["login_security"]  # type: ignore[arg-type]
        assert section["ssh_whitelist"] == [] and section["login_whitelist"] == ["198.51.100.0/24"]

    alarm_page = client.get(f"/console/alarms/{seeded['alarm_id']}")
    assert "Add to login whitelist" in alarm_page.text and 'id="login-alarm-actions"' in alarm_page.text
    text = post_form(
        client,
        csrf,
        f"/console/alarms/{seeded['alarm_id']}/login-action",
        action="add_to_login_whitelist",
        next=f"/console/alarms/{seeded['alarm_id']}",
    )
    assert "it stays blocked until unblocked" in flash_of(text) and "Remove from login whitelist" in text

    # a read-only user sees the pages without change buttons and cannot post
    client.cookies.clear()
    viewer_csrf = console_login(client, "viewer")
    page = client.get("/console/blocked-ips")
    assert page.status_code == 200 and "Unblock selected" not in page.text
    r = client.post("/console/blocked-ips/unblock", data={"csrf": viewer_csrf, "ids": row_id})
    assert r.status_code == 403


# ---- CLI against a real manager ----


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    with running_manager(tmp_path_factory.mktemp("loginsec-cli")) as m:
        login(m, m.home)
        yield m


@pytest.mark.slow
def test_cli_whitelists_and_blocked_ips(manager: Manager, tmp_path: Path) -> None:
    home = manager.home
    err = one_line_error(hostward(["whitelists", "login", "add", "10.0.0.1", "10.0.0.256"], home))
    assert "'10.0.0.256'" in err
    entry = as_json(
        hostward(["whitelists", "login", "add", "10.0.0.0/8", "fd00::/8", "--remarks", "lab", "--json"], home)
    )
    assert entry["networks"] == ["10.0.0.0/8", "fd00::/8"]
    listed = as_json(hostward(["whitelists", "login", "list", "--json"], home))
    assert [e["id"] for e in listed] == [entry["id"]]
    ok(hostward(["whitelists", "login", "delete", entry["id"]], home))
    assert as_json(hostward(["whitelists", "login", "list", "--json"], home)) == []

    ok(hostward(["whitelists", "common-ip", "set", "198.51.100.4", "203.0.113.0/24"], home))
    ok(hostward(["whitelists", "common-ip", "add", "2001:db8::1"], home))
    ok(hostward(["whitelists", "common-ip", "remove", "203.0.113.0/24"], home))
    assert as_json(hostward(["whitelists", "common-ip", "list", "--json"], home)) == [
        "198.51.100.4",
        "2001:db8::1",
    ]
    err = one_line_error(hostward(["whitelists", "common-ip", "add", "999.1.1.1"], home))
    assert "'999.1.1.1'" in err
    ok(hostward(["whitelists", "common-location", "set", "Germany", "Hong Kong"], home))
    assert as_json(hostward(["whitelists", "common-location", "list", "--json"], home)) == [
        "Germany",
        "Hong Kong",
    ]

    server = as_json(hostward(["servers", "add", "db-1", "--json"], home))
    ok(hostward(["whitelists", "ssh-ip", "set", "db-1", "10.3.0.1", "10.3.0.0/24"], home))
    ok(hostward(["whitelists", "ssh-ip", "disable", "db-1", "10.3.0.1"], home))
    rows = as_json(hostward(["whitelists", "ssh-ip", "list", "db-1", "--json"], home))
    expected = [("10.3.0.0/24", True), ("10.3.0.1/32", False)]
    assert sorted((r["network"], r["enabled"]) for r in rows) == expected
    err = one_line_error(
        hostward(["whitelists", "ssh-ip", "set", "db-1", *[f"10.4.0.{i}" for i in range(11)]], home)
    )
    assert "at most 10" in err
    ok(hostward(["whitelists", "ssh-ip", "clear", server["id"]], home))
    assert as_json(hostward(["whitelists", "ssh-ip", "list", "--json"], home)) == []

    assert as_json(hostward(["blocked-ips", "list", "--json"], home)) == []
    err = one_line_error(hostward(["blocked-ips", "unblock", "--ip", "203.0.113.9"], home))
    assert "not blocked" in err
