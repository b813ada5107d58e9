"""Ransomware prevention on the manager: policies, enable/disable on premium/WTP servers, the bundle,
status and snapshot records through the real ingest path, restore, and the REST API.

Service tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from hostward.core.errors import Conflict, NotFound
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.audit.models import AuditRecord
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.ransomware import service as rw
from hostward.manager.ransomware.schemas import PolicyIn
from hostward.manager.servers.models import Server
from hostward.wire import RawEventBatch
from tests.fakes.servers import enrolled_server
from tests.managerapi import api_client, api_login, console_login, ready_ctx


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    return ready_ctx(request)


def add_server(ctx: ManagerContext, name: str, edition: str | None) -> str:
    with ctx.uow() as s:
        server = enrolled_server(s, ctx.clock.now(), name=name)
        server.edition = edition
        server.protection_status = "opened" if edition else "closed"
        return server.id


def policy_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "web data",
        "protected_dirs": ["/srv/data", "/home/share/"],
        "excluded_dirs": ["/srv/data/tmp"],
        "file_types": ["docx", ".XLSX", "pdf"],
        "action": "alarm_and_isolate",
        "bait": True,
        "snapshot_interval_h": 12,
        "snapshot_keep": 2,
    }
    body.update(overrides)
    return body


def record(topic: str, key: str, data: dict[str, Any], at: Any) -> dict[str, Any]:
    return {"kind": "record", "key": key, "occurred_at": at.isoformat(), "topic": topic, "data": data}


def send(ctx: ManagerContext, server_id: str, *events: dict[str, Any]) -> list[str]:
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest.ingest_batch(s, server, RawEventBatch(events=list(events)), ctx.clock.now())
    return [a.status for a in acks]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"protected_dirs": []}, "protected_dirs"),
        ({"protected_dirs": [f"/d{i}" for i in range(21)]}, "protected_dirs"),
        ({"excluded_dirs": [f"/d{i}" for i in range(21)]}, "excluded_dirs"),
        ({"protected_dirs": ["relative"]}, "absolute"),
        ({"file_types": ["no way"]}, "file_types"),
        ({"action": "explode"}, "action"),
        ({"snapshot_keep": 0}, "snapshot_keep"),
        ({"snapshot_interval_h": 0}, "snapshot_interval_h"),
        ({"excluded_dirs": ["/srv/data"]}, "excluded_dirs"),
        ({"name": ""}, "name"),
    ],
)
def test_policy_limits_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        PolicyIn.model_validate(policy_body(**change))
    assert field in str(exc.value)


def test_policies_enable_bundle_records_restore(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    now = ctx.clock.now()
    prem = add_server(ctx, "prem-1", "premium")
    wtp_srv = add_server(ctx, "wtp-1", "wtp")
    ent = add_server(ctx, "ent-1", "enterprise")
    bare = add_server(ctx, "bare-1", None)
    with ctx.uow() as s:
        policy = rw.create_policy(s, PolicyIn.model_validate(policy_body()), actor="alice", now=now)
        pid = policy.id
        assert policy.file_types == ["docx", "xlsx", "pdf"] and policy.protected_dirs == [
            "/srv/data",
            "/home/share",
        ]
        with pytest.raises(Conflict):
            rw.create_policy(s, PolicyIn.model_validate(policy_body()), actor="alice", now=now)
    with ctx.uow() as s:
        outcomes = rw.batch(s, [prem, wtp_srv, ent, bare, "missing"], rw.enable_one, pid, now, actor="alice")
    by_id = {o.server_id: o for o in outcomes}
    assert by_id[prem].ok and by_id[wtp_srv].ok
    for sid in (ent, bare):
        err = by_id[sid].error
        assert err is not None and err.code == "edition_not_supported" and "premium or WTP" in err.message
    assert by_id["missing"].error is not None and by_id["missing"].error.code == "not_found"

    with ctx.uow() as s:
        server = s.get(Server, prem)
        assert server is not None
        section = policies.bundle_for(s, server).global_settings["ransomware"]
        assert section["enabled"] is True
        assert section["policy"] == {
            "name": "web data",
            "protected_dirs": ["/srv/data", "/home/share"],
            "excluded_dirs": ["/srv/data/tmp"],
            "file_types": ["docx", "xlsx", "pdf"],
            "action": "alarm_and_isolate",
            "bait": True,
            "snapshot_interval_h": 12,
            "snapshot_keep": 2,
        }
        ent_server = s.get(Server, ent)
        assert ent_server is not None
        assert policies.bundle_for(s, ent_server).global_settings["ransomware"] == {
            "enabled": False,
            "policy": None,
        }
        pushed = s.scalars(select(AgentCommand).where(AgentCommand.kind == "apply_policy")).all()
        assert {c.server_id for c in pushed} == {prem, wtp_srv}
        version = server.policy_version
    # a policy change reaches every bound server
    with ctx.uow() as s:
        rw.update_policy(s, pid, PolicyIn.model_validate(policy_body(action="alarm")), actor="bob", now=now)
    with ctx.uow() as s:
        server = s.get(Server, prem)
        assert server is not None and server.policy_version != version
        assert policies.bundle_for(s, server).global_settings["ransomware"]["policy"]["action"] == "alarm"
        with pytest.raises(rw.PolicyInUse) as exc:
            rw.delete_policy(s, pid, actor="bob", now=now)
        assert exc.value.status == 409 and "prem-1" in exc.value.message

    t0 = now - timedelta(hours=3)
    acks = send(
        ctx,
        prem,
        record("ransomware_status", "st1", {"state": "protected", "message": "", "baits": 7}, t0),
        *[
            record("ransomware_snapshot", f"sn{i}", {"snapshot_id": f"snap-{i}", "taken_at":
                   (t0 + timedelta(hours=i)).isoformat(), "files": 10 + i, "bytes": 1000 * i}, t0)
            for i in range(3)
        ],
        record("ransomware_snapshot", "bad", {"taken_at": t0.isoformat()}, t0),
    )  # fmt: skip
    assert acks == ["accepted"] * 4 + ["rejected"]
    with ctx.uow() as s:
        rows, _total = rw.list_servers(s)
        row = next(r for r in rows if r.server.id == prem)
        assert row.enabled and row.state == "protected" and row.snapshots == 2, "only snapshot_keep are kept"
        snaps, n = rw.list_snapshots(s, server_id=prem)
        assert n == 2 and [x.snapshot_id for x, _ in snaps] == ["snap-2", "snap-1"]
        assert {r.server.id for r in rows} == {prem, wtp_srv}
        command_id = rw.restore(s, prem, "snap-1", actor="alice", now=now)
        assert rw.list_snapshots(s, server_id="a\0")[1] == 0 and rw.list_servers(s, q="\0x")[1] == 0
        for bad in (lambda: rw.get_policy(s, "p\0"), lambda: rw.restore(s, prem, "s\0", actor="a", now=now)):
            with pytest.raises(NotFound):
                bad()
        with pytest.raises(NotFound) as nf:
            rw.restore(s, prem, "snap-0", actor="alice", now=now)
        assert "snapshot_id" in nf.value.message
    with ctx.uow() as s:
        command = s.get(AgentCommand, command_id)
        assert command is not None and command.kind == "ransomware_restore"
        assert command.payload == {"snapshot_id": "snap-1"}
    # The agent's own list of what it kept wins over the count.
    t3 = (t0 + timedelta(hours=3)).isoformat()
    snap3 = {"snapshot_id": "snap-3", "taken_at": t3, "files": 1, "bytes": 1, "kept": ["snap-2", "snap-3"]}
    assert send(ctx, prem, record("ransomware_snapshot", "sn3", snap3, t0)) == ["accepted"]
    with ctx.uow() as s:
        assert [x.snapshot_id for x, _ in rw.list_snapshots(s, server_id=prem)[0]] == ["snap-3", "snap-2"]
        partial = rw.restore(s, prem, "snap-2", actor="alice", now=now, path="/srv/data/reports")
    with ctx.uow() as s:
        command = s.get(AgentCommand, partial)
        assert command is not None and command.payload == {
            "snapshot_id": "snap-2",
            "path": "/srv/data/reports",
        }

    with ctx.uow() as s:
        assert rw.batch(s, [prem, wtp_srv], rw.disable_one, now, actor="bob")[0].ok
        assert not rw.batch(s, [prem], rw.disable_one, now, actor="bob")[0].ok
    with ctx.uow() as s:
        server = s.get(Server, prem)
        assert server is not None
        assert policies.bundle_for(s, server).global_settings["ransomware"]["enabled"] is False
        rw.delete_policy(s, pid, actor="bob", now=now)
        actions = {a.action for a in s.scalars(select(AuditRecord))}
    assert {
        "ransomware_policy_create", "ransomware_policy_update", "ransomware_enable", "ransomware_restore",
        "ransomware_disable", "ransomware_policy_delete",
    } <= actions  # fmt: skip


# ---- REST API (SQLite) -------------------------------------------------------------------------------


@pytest.fixture
def client(ctx: ManagerContext) -> Iterator[TestClient]:
    with api_client(ctx) as c:
        yield c


def test_api(ctx: ManagerContext, client: TestClient) -> None:
    prem = add_server(ctx, "prem-1", "premium")
    basic = add_server(ctx, "basic-1", "basic")
    admin, viewer = api_login(client), api_login(client, "viewer")
    assert client.post("/api/v1/ransomware/policies", headers=viewer, json=policy_body()).status_code == 403
    r = client.post("/api/v1/ransomware/policies", headers=admin, json=policy_body())
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.post("/api/v1/ransomware/policies", headers=admin, json=policy_body(name="x", action="nuke"))
    assert r.status_code == 422 and "action" in r.json()["error"]["message"]
    r = client.post("/api/v1/ransomware/policies", headers=admin, json=policy_body())
    assert r.status_code == 409 and "name" in r.json()["error"]["message"]

    r = client.post(
        "/api/v1/ransomware/enable", headers=admin, json={"server_ids": [prem, basic], "policy_id": pid}
    )
    results = {x["server_id"]: x for x in r.json()["results"]}
    assert results[prem]["ok"] and results[basic]["error"]["code"] == "edition_not_supported"
    r = client.post(
        "/api/v1/ransomware/enable", headers=admin, json={"server_ids": [prem], "policy_id": "nope"}
    )
    assert r.status_code == 404

    listed = client.get("/api/v1/ransomware/policies", headers=viewer).json()
    assert listed[0]["servers"] == 1 and listed[0]["file_types"] == ["docx", "xlsx", "pdf"]
    r = client.delete(f"/api/v1/ransomware/policies/{pid}", headers=admin)
    assert r.status_code == 409 and r.json()["error"]["code"] == "policy_in_use"
    r = client.put(f"/api/v1/ransomware/policies/{pid}", headers=admin, json=policy_body(bait=False))
    assert r.status_code == 200 and r.json()["bait"] is False and r.json()["servers"] == 1

    servers = client.get("/api/v1/ransomware/servers", headers=viewer).json()
    item = next(x for x in servers["items"] if x["server_id"] == prem)
    assert item["enabled"] and item["policy_name"] == "web data" and item["state"] == "pending"

    t0 = ctx.clock.now()
    snap = {"snapshot_id": "snap-a", "taken_at": t0.isoformat(), "files": 3, "bytes": 99}
    assert send(ctx, prem, record("ransomware_snapshot", "s1", snap, t0)) == ["accepted"]
    snaps = client.get("/api/v1/ransomware/snapshots", headers=viewer, params={"server_id": prem}).json()
    assert snaps["total"] == 1 and snaps["items"][0]["server_name"] == "prem-1"
    r = client.post(
        "/api/v1/ransomware/restore", headers=admin, json={"server_id": prem, "snapshot_id": "snap-a"}
    )
    assert r.status_code == 200 and r.json()["command_id"]
    r = client.post(
        "/api/v1/ransomware/restore", headers=admin, json={"server_id": prem, "snapshot_id": "zzz"}
    )
    assert r.status_code == 404
    r = client.post("/api/v1/ransomware/disable", headers=admin, json={"server_ids": [prem]})
    assert r.json()["results"][0]["ok"]
    assert client.delete(f"/api/v1/ransomware/policies/{pid}", headers=admin).status_code == 204
    assert client.get(f"/api/v1/ransomware/policies/{pid}", headers=viewer).status_code == 404


# ---- console (SQLite) --------------------------------------------------------------------------------


def test_console_ransomware_page(ctx: ManagerContext, client: TestClient) -> None:
    prem = add_server(ctx, "prem-1", "premium")
    add_server(ctx, "basic-1", "basic")
    csrf = console_login(client)

    def post(url: str, **data: Any) -> str:
        r = client.post(
            url, data={"csrf": csrf, "next": "/console/ransomware", **data}, follow_redirects=True
        )
        assert r.status_code == 200, r.text
        return r.text

    html = client.get("/console/ransomware").text
    assert 'data-nav="ransomware"' in html and "Ransomware Prevention" in html
    assert f'data-server-id="{prem}"' in html and "basic-1" not in html
    form = {"name": "docs", "protected_dirs": "/srv/docs; /home", "excluded_dirs": "/srv/docs/tmp",
            "file_types": "docx, pdf", "action": "alarm_and_isolate", "bait": "1"}  # fmt: skip
    html = post("/console/ransomware/policies", **form)
    assert "Ransomware policy docs created" in html and "/srv/docs; /home" in html
    html = post("/console/ransomware/policies", **{**form, "name": "bad", "protected_dirs": "relative"})
    assert "protected_dirs" in html and "absolute" in html
    with ctx.uow() as s:
        pid = rw.list_policies(s)[0][0].id
    html = post("/console/ransomware/enable", server_id=prem, policy_id=pid)
    assert "Ransomware prevention enabled" in html
    html = post("/console/ransomware/policies/delete", policy_id=pid)
    assert "bound to 1 server" in html

    t0 = ctx.clock.now()
    snap = {"snapshot_id": "snap-a", "taken_at": t0.isoformat(), "files": 3, "bytes": 2048}
    send(ctx, prem, record("ransomware_snapshot", "s1", snap, t0))
    send(ctx, prem, record("ransomware_status", "st", {"state": "protected", "baits": 6}, t0))
    html = client.get("/console/ransomware").text
    assert 'data-snapshot-id="snap-a"' in html and 'data-rw-state="protected"' in html
    html = post("/console/ransomware/restore", server_id=prem, snapshot_id="snap-a")
    assert "Restore from snapshot snap-a queued" in html
    html = post("/console/ransomware/restore", server_id=prem, snapshot_id="nope")
    assert "has no snapshot nope" in html
    html = post("/console/ransomware/disable", server_id=prem)
    assert "Ransomware prevention disabled" in html
    html = post("/console/ransomware/policies/delete", policy_id=pid)
    assert "Ransomware policy docs deleted" in html

    console_login(client, "viewer")
    assert "/console/ransomware/restore" not in client.get("/console/ransomware").text
