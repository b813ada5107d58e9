"""Web tamper protection on the manager: enable/disable with quotas, configuration limits, bundle,
status and tamper records through the real ingest path, remote backup on the agent channel, API.

Service tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from hostward.core.errors import Conflict, Invalid, NotFound
from hostward.core.ids import new_id, sha256_hex
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand, AgentCredential
from hostward.manager.app import create_agent_app
from hostward.manager.audit.models import AuditRecord
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.quotas.models import Quota
from hostward.manager.servers.models import Server
from hostward.manager.wtp import remote
from hostward.manager.wtp import service as wtp
from hostward.manager.wtp.remote import RemoteBackup
from hostward.manager.wtp.schemas import WtpConfigIn
from hostward.wire import RawEventBatch
from tests.fakes.servers import enrolled_server
from tests.managerapi import api_client, api_login, console_login, ready_ctx


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    return ready_ctx(request)


def add_server(ctx: ManagerContext, name: str, *, edition: str | None = None, quotas_of: str = "wtp") -> str:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name=name)
        quotas.add_quotas(
            s, quotas_of, 1, expires_at=None, region=server.region, now=now, settings=ctx.settings, actor="t"
        )
        if edition:
            protection.enable_one(s, server.id, edition, now, ctx.settings, actor="t", trigger_scan=False)
        return server.id


def config(**overrides: Any) -> WtpConfigIn:
    body: dict[str, Any] = {
        "dirs": [
            {
                "path": "/var/www/html",
                "excluded_subdirs": ["cache"],
                "excluded_types": ["log", ".PID"],
                "excluded_paths": ["/var/www/html/upload"],
            }
        ],
        "backup_path": "/srv/wtp-backup",
        "privileged": ["/usr/bin/rsync"],
        "schedule": {"enabled": True, "weekdays": [6, 7], "windows": [{"start": "02:00", "end": "03:00"}]},
    }
    body.update(overrides)
    return WtpConfigIn.model_validate(body)


def record(topic: str, key: str, data: dict[str, Any], at: Any) -> dict[str, Any]:
    return {"kind": "record", "key": key, "occurred_at": at.isoformat(), "topic": topic, "data": data}


def send(ctx: ManagerContext, server_id: str, *events: dict[str, Any]) -> list[str]:
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest.ingest_batch(s, server, RawEventBatch(events=list(events)), ctx.clock.now())
    return [a.status for a in acks]


def commands(ctx: ManagerContext, server_id: str, kind: str) -> list[AgentCommand]:
    with ctx.uow() as s:
        return list(
            s.scalars(
                select(AgentCommand).where(AgentCommand.server_id == server_id, AgentCommand.kind == kind)
            )
        )


# ---- configuration limits (pure) ---------------------------------------------------------------------


def one_dir(**fields: Any) -> dict[str, Any]:
    return {"dirs": [{"path": "/srv/a", **fields}]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dirs": [{"path": "relative/dir"}]}, "absolute"),
        ({"dirs": [{"path": "/etc"}]}, "system directory"),
        ({"dirs": [{"path": "/srv/a"}, {"path": "/srv/a/"}]}, "dirs[1].path"),
        ({"dirs": [{"path": f"/srv/d{i}"} for i in range(51)]}, "dirs"),
        (one_dir(excluded_subdirs=[f"s{i}" for i in range(11)]), "excluded_subdirs"),
        ({"dirs": [{"path": "/srv/a", "excluded_types": ["not-a-type"]}]}, "excluded_types"),
        ({"dirs": [{"path": "/srv/a", "excluded_types": [f"t{i}" for i in range(11)]}]}, "excluded_types"),
        (one_dir(excluded_paths=[f"/srv/a/{i}" for i in range(51)]), "excluded_paths"),
        ({"dirs": [{"path": "/srv/a", "excluded_paths": ["/elsewhere/x"]}]}, "not inside"),
        ({"dirs": [{"path": "/srv/a" + "x" * 300}]}, "256"),
        ({"dirs": [{"path": "/srv/a"}], "backup_path": "/srv/a/backup"}, "backup_path"),
        ({"dirs": [{"path": "/srv/a/www"}], "backup_path": "/srv/a"}, "backup_path"),
        ({"privileged": [f"/usr/bin/p{i}" for i in range(11)]}, "privileged"),
        ({"privileged": ["rsync"]}, "absolute"),
        ({"schedule": {"windows": [{"start": "01:00", "end": "01:03"}]}}, "shorter than 5"),
        ({"schedule": {"windows": [{"start": "01:00", "end": "00:30"}]}}, "end after"),
        ({"schedule": {"windows": [{"start": "01:00", "end": "02:00"}, {"start": "01:30", "end": "03:00"}]}},
         "overlap"),
        ({"schedule": {"windows": [{"start": "01:00", "end": "02:00"}, {"start": "02:02", "end": "03:00"}]}},
         "5 minutes apart"),
        ({"schedule": {"windows": [{"start": f"0{i}:00", "end": f"0{i}:30"} for i in range(6)]}}, "windows"),
        ({"schedule": {"weekdays": [0, 8]}}, "weekday"),
        ({"schedule": {"windows": [{"start": "25:00", "end": "26:00"}]}}, "HH:MM"),
        ({"surprise": 1}, "surprise"),
    ],
)  # fmt: skip
def test_config_limits_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        config(**change)
    text = str(exc.value)
    assert field in text, text


def test_config_accepts_edge_cases_and_normalises() -> None:
    cfg = config(
        dirs=[{"path": "/srv/site/./www/", "excluded_types": ["LOG", ".log", "tmp"]}],
        schedule={
            "enabled": True,
            "weekdays": [7, 1],
            # anchored at the ends of the day, so the 5-minute gap rule does not apply
            "windows": [
                {"start": "00:00", "end": "00:10"},
                {"start": "00:12", "end": "01:00"},
                {"start": "23:00", "end": "23:47"},
                {"start": "23:50", "end": "23:59"},
            ],
        },
    )
    assert cfg.dirs[0].path == "/srv/site/www"
    assert cfg.dirs[0].excluded_types == ["log", "tmp"]
    assert cfg.schedule.weekdays == [1, 7]


# ---- enable / disable / configuration (SQLite and PostgreSQL) ----------------------------------------


def test_enable_binds_wtp_quota_bundle_and_disable_keeps_config(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    web = add_server(ctx, "web-1")
    now = ctx.clock.now()
    with ctx.uow() as s:
        wtp.set_config(s, web, config(), actor="alice", now=now)
    with ctx.uow() as s:
        server = s.get(Server, web)
        assert server is not None
        section = policies.bundle_for(s, server).global_settings["wtp"]
        assert section["enabled"] is False and section["dirs"][0]["path"] == "/var/www/html"
        # the generic protection endpoint refuses the WTP edition
        with pytest.raises(Invalid) as exc:
            protection.enable_one(s, web, "wtp", now, ctx.settings, actor="alice")
        assert exc.value.code == "wtp_page_only"

    with ctx.uow() as s:
        outcomes = wtp.batch(s, [web], wtp.enable_one, now, ctx.settings, actor="alice")
    assert outcomes[0].ok and outcomes[0].quota_id
    with ctx.uow() as s:
        server = s.get(Server, web)
        assert server is not None
        assert (server.edition, server.protection_status) == ("wtp", "opened")
        quota = s.scalar(select(Quota).where(Quota.server_id == web))
        assert quota is not None and quota.edition == "wtp"
        bundle = policies.bundle_for(s, server)
        assert bundle.protection and bundle.edition == "wtp"
        section = bundle.global_settings["wtp"]
        assert section["enabled"] is True
        assert section["dirs"][0] == {
            "path": "/var/www/html",
            "excluded_subdirs": ["cache"],
            "excluded_types": ["log", "pid"],
            "excluded_paths": ["/var/www/html/upload"],
            "suspended": False,
        }
        assert section["backup_path"] == "/srv/wtp-backup" and section["privileged"] == ["/usr/bin/rsync"]
        assert section["schedule"]["windows"] == [{"start": "02:00", "end": "03:00"}]
        # premium's policies come with the WTP edition
        group = policies.default_group(s, "premium")
        assert server.policy_group_id == group.id
    assert commands(ctx, web, "apply_policy"), "the agent is asked to fetch the new bundle"

    with ctx.uow() as s:
        again = wtp.batch(s, [web], wtp.enable_one, now, ctx.settings, actor="alice")
    assert not again[0].ok and isinstance(again[0].error, Conflict)

    with ctx.uow() as s:
        wtp.set_suspended(s, web, "/var/www/html", True, actor="alice", now=now)
        with pytest.raises(NotFound):
            wtp.set_suspended(s, web, "/var/www/other", True, actor="alice", now=now)
        with pytest.raises(Conflict):
            wtp.set_suspended(s, web, "/var/www/html", True, actor="alice", now=now)
    with ctx.uow() as s:
        server = s.get(Server, web)
        assert server is not None
        assert policies.bundle_for(s, server).global_settings["wtp"]["dirs"][0]["suspended"] is True

    with ctx.uow() as s:
        assert wtp.batch(s, [web], wtp.disable_one, now, ctx.settings, actor="bob")[0].ok
    with ctx.uow() as s:
        server = s.get(Server, web)
        assert server is not None and server.edition is None
        assert s.scalar(select(Quota).where(Quota.server_id == web)) is None, "quota freed"
        _server, kept, active = wtp.config_of(s, web)
        assert not active and kept.dirs[0].path == "/var/www/html" and kept.privileged == ["/usr/bin/rsync"]
        assert policies.bundle_for(s, server).global_settings["wtp"]["enabled"] is False
        actions = [a.action for a in s.scalars(select(AuditRecord).order_by(AuditRecord.at))]
    for action in ("wtp_config", "wtp_enable", "wtp_suspend_dir", "wtp_disable", "open_protection"):
        assert action in actions
    with ctx.uow() as s:
        assert not wtp.batch(s, [web], wtp.disable_one, now, ctx.settings, actor="bob")[0].ok


def test_enable_refusals(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    premium = add_server(ctx, "prem-1", edition="premium", quotas_of="premium")
    no_quota = add_server(ctx, "noquota-1", quotas_of="basic")
    now = ctx.clock.now()
    with ctx.uow() as s:
        offline = enrolled_server(s, now, name="off-1", online=False).id
        outcomes = wtp.batch(
            s, [premium, no_quota, offline, "missing"], wtp.enable_one, now, ctx.settings, actor="a"
        )
    errors = {o.server_id: o.error for o in outcomes if o.error is not None}
    assert not any(o.ok for o in outcomes) and len(errors) == 4
    assert "disable it first" in errors[premium].message
    assert errors[no_quota].code == "no_idle_quota"
    assert errors[offline].code == "agent_not_online"
    assert errors["missing"].code == "not_found"


def test_status_and_tamper_records(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    web = add_server(ctx, "web-1")
    add_server(ctx, "idle-1")
    now = ctx.clock.now()
    with ctx.uow() as s:
        wtp.set_config(s, web, config(), actor="a", now=now)
        wtp.enable_one(s, web, now, ctx.settings, actor="a")
    t0 = now - timedelta(seconds=30)
    status = {
        "state": "protected",
        "message": "immutable not supported; watch-and-restore only: /var/www/html",
        "dirs": [{"path": "/var/www/html", "state": "protected", "files": 12}],
        "backup": {"files": 12, "bytes": 4096, "built_at": t0.isoformat()},
    }
    tamper = {
        "path": "/var/www/html/index.html",
        "action": "modified",
        "outcome": "restored",
        "directory": "/var/www/html",
        "process": {
            "pid": 77,
            "exe": "/usr/bin/python3.12",
            "uid": 0,
            "user": "root",
            "cmdline": "python3 x",
        },
        "latency_ms": 41.7,
        "occurred_at": t0.isoformat(),
    }
    acks = send(
        ctx,
        web,
        record("wtp_status", "s1", status, t0),
        record("wtp_tamper", "t1", tamper, t0),
        record("wtp_tamper", "t2", {**tamper, "path": "/var/www/html/x\0y.php", "action": "created",
                                    "outcome": "removed", "process": None, "moved_to": "/srv/wtp-backup/t/1"},
               t0 + timedelta(seconds=1)),
        record("wtp_tamper", "t3", {"action": "modified"}, t0),
        record("wtp_status", "s0", {**status, "state": "error"}, t0 - timedelta(minutes=5)),
    )  # fmt: skip
    assert acks == ["accepted", "accepted", "accepted", "rejected", "accepted"]
    with ctx.uow() as s:
        rows, total = wtp.list_servers(s)
        assert total == 1 and rows[0].server.id == web
        row = rows[0]
        assert row.state == "protected", "an older status arriving late does not overwrite"
        assert row.tamper_count == 2 and row.status["backup"]["files"] == 12
        events, n = wtp.list_events(s, server_id=web)
        assert n == 2
        newest = events[0][0]
        assert newest.path == "/var/www/html/x\\x00y.php" and newest.process_pid is None
        assert events[1][0].process_exe == "/usr/bin/python3.12" and events[1][0].latency_ms == 42
        assert wtp.list_events(s, q="python3")[1] == 1
        # NUL in a filter or an id (PostgreSQL refuses it in text parameters) finds nothing, no error
        assert wtp.list_events(s, server_id="a\0b", q="\0")[1] == 0
        assert wtp.list_servers(s, q="x\0")[1] == 0
        with pytest.raises(NotFound):
            wtp.get_server(s, "a\0b")
        stats = wtp.statistics(s, ctx.clock.now())
        assert stats["servers_protected"] == 1 and stats["tamper_events"] == 2
        assert wtp.purge_old(s, ctx.clock.now() + timedelta(days=181)) == 2


# ---- REST API and the agent channel (SQLite) ---------------------------------------------------------


@pytest.fixture
def client(ctx: ManagerContext) -> Iterator[TestClient]:
    with api_client(ctx) as c:
        yield c


def test_api_config_enable_events_and_restore(ctx: ManagerContext, client: TestClient) -> None:
    web = add_server(ctx, "web-1")
    admin, viewer = api_login(client), api_login(client, "viewer")
    body = config().model_dump()
    assert client.put(f"/api/v1/wtp/servers/{web}/config", headers=viewer, json=body).status_code == 403
    r = client.put(f"/api/v1/wtp/servers/{web}/config", headers=admin, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["dirs"][0]["excluded_types"] == ["log", "pid"] and r.json()["enabled"] is False
    bad = {**body, "dirs": [{"path": "/srv/a", "excluded_types": ["a.b"]}]}
    r = client.put(f"/api/v1/wtp/servers/{web}/config", headers=admin, json=bad)
    assert r.status_code == 422 and "dirs.0.excluded_types" in r.json()["error"]["message"]
    r = client.put(
        f"/api/v1/wtp/servers/{web}/config", headers=admin, json={**body, "backup_path": "/var/www"}
    )
    assert r.status_code == 422 and "backup_path" in r.json()["error"]["message"]
    assert client.put("/api/v1/wtp/servers/nope/config", headers=admin, json=body).status_code == 404

    r = client.post("/api/v1/protection/enable", headers=admin, json={"server_ids": [web], "edition": "wtp"})
    assert r.json()["results"][0]["error"]["code"] == "wtp_page_only"
    r = client.post("/api/v1/wtp/enable", headers=admin, json={"server_ids": [web]})
    assert r.status_code == 200 and r.json()["results"][0]["ok"], r.text
    r = client.post("/api/v1/wtp/enable", headers=admin, json={"server_ids": [web, "x"], "quota_id": "q"})
    assert r.status_code == 422

    items = client.get("/api/v1/wtp/servers", headers=viewer).json()["items"]
    assert len(items) == 1
    assert items[0]["wtp_enabled"] and items[0]["state"] == "pending" and items[0]["dirs"] == 1
    r = client.post(
        f"/api/v1/wtp/servers/{web}/directories/suspend", headers=admin, json={"path": "/var/www/html"}
    )
    assert r.status_code == 200 and r.json()["dirs"][0]["suspended"] is True
    r = client.post(f"/api/v1/wtp/servers/{web}/directories/resume", headers=admin, json={"path": "/nope"})
    assert r.status_code == 404 and "/nope" in r.json()["error"]["message"]
    r = client.post(f"/api/v1/wtp/servers/{web}/directories/resume", headers=admin, json={"path": "rel"})
    assert r.status_code == 422 and "path" in r.json()["error"]["message"]

    t0 = ctx.clock.now()
    deleted = {"path": "/var/www/html/a.html", "action": "deleted", "outcome": "restored", "directory": "/d"}
    send(ctx, web, record("wtp_tamper", "t1", deleted, t0))
    events = client.get("/api/v1/wtp/events", headers=viewer, params={"server_id": web}).json()
    assert events["total"] == 1 and events["items"][0]["server_name"] == "web-1"
    assert events["items"][0]["action"] == "deleted"
    assert client.get("/api/v1/wtp/events", headers=viewer, params={"q": "zzz"}).json()["total"] == 0
    assert client.get("/api/v1/wtp/statistics", headers=viewer).json()["tamper_events"] == 1
    assert client.get(f"/api/v1/wtp/servers/{web}", headers=viewer).json()["tamper_count"] == 1

    # remote restore: only with remote backup on, and only for a path the manager's copy has
    r = client.post(
        f"/api/v1/wtp/servers/{web}/restore-remote", headers=admin, json={"path": "/var/www/html/a"}
    )
    assert r.status_code == 409 and "remote backup" in r.json()["error"]["message"]
    body["remote_backup"] = True
    assert client.put(f"/api/v1/wtp/servers/{web}/config", headers=admin, json=body).status_code == 200
    r = client.post(
        f"/api/v1/wtp/servers/{web}/restore-remote", headers=admin, json={"path": "/var/www/html/a"}
    )
    assert r.status_code == 404
    RemoteBackup(ctx.settings.data_dir, web).save_manifest(
        [{"path": "/var/www/html/a", "sha256": "0" * 64, "mode": 0o644, "uid": 0, "gid": 0}]
    )
    r = client.post(
        f"/api/v1/wtp/servers/{web}/restore-remote", headers=admin, json={"path": "/var/www/html/a"}
    )
    assert r.status_code == 200, r.text
    queued = commands(ctx, web, "wtp_remote_restore")
    assert [c.payload for c in queued] == [{"path": "/var/www/html/a"}]

    r = client.post("/api/v1/wtp/disable", headers=admin, json={"server_ids": [web]})
    assert r.json()["results"][0]["ok"]
    assert (
        client.get(f"/api/v1/wtp/servers/{web}/config", headers=viewer).json()["dirs"][0]["path"]
        == "/var/www/html"
    )


def agent_key(ctx: ManagerContext, server_id: str) -> str:
    key = "hwa_" + new_id()
    with ctx.uow() as s:
        s.add(
            AgentCredential(
                server_id=server_id, key_hash=sha256_hex(key), key_prefix=key[:12], created_at=ctx.clock.now()
            )
        )
    return key


def test_agent_channel_remote_backup(ctx: ManagerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    with ctx.uow() as s:
        policies.ensure_presets(s)
    web, other = add_server(ctx, "web-1"), add_server(ctx, "web-2")
    now = ctx.clock.now()
    with ctx.uow() as s:
        wtp.set_config(s, web, config(remote_backup=True), actor="a", now=now)
        wtp.set_config(s, other, config(), actor="a", now=now)
    web_h = {"Authorization": f"Bearer {agent_key(ctx, web)}"}
    other_h = {"Authorization": f"Bearer {agent_key(ctx, other)}"}
    content = b"<html>hello</html>\n"
    sha = hashlib.sha256(content).hexdigest()
    with TestClient(create_agent_app(ctx)) as agent:
        manifest = {"files": [{"path": "/var/www/html/index.html", "sha256": sha, "mode": 0o644, "uid": 33,
                               "gid": 33}]}  # fmt: skip
        r = agent.post("/agent/v1/wtp/manifest", headers=web_h, json=manifest)
        assert r.status_code == 200 and r.json() == {"files": 1, "missing": [sha]}, r.text
        assert agent.put(f"/agent/v1/wtp/blobs/{sha}", content=content).status_code == 401
        r = agent.put(f"/agent/v1/wtp/blobs/{sha}", headers=web_h, content=b"tampered")
        assert r.status_code == 422 and r.json()["error"]["code"] == "hash_mismatch"
        r = agent.put("/agent/v1/wtp/blobs/NOTAHASH", headers=web_h, content=content)
        assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]
        r = agent.put(f"/agent/v1/wtp/blobs/{sha}", headers=web_h, content=content)
        assert r.status_code == 200 and r.json()["stored"] is True
        assert (
            agent.put(f"/agent/v1/wtp/blobs/{sha}", headers=web_h, content=content).json()["stored"] is False
        )
        assert agent.post("/agent/v1/wtp/manifest", headers=web_h, json=manifest).json()["missing"] == []
        r = agent.get(f"/agent/v1/wtp/blobs/{sha}", headers=web_h)
        assert r.status_code == 200 and r.content == content
        # another server neither reads this server's blobs nor stores any without remote backup on
        r = agent.get(f"/agent/v1/wtp/blobs/{sha}", headers=other_h)
        assert r.status_code == 409 and r.json()["error"]["code"] == "wtp_remote_backup_off"
        with ctx.uow() as s:
            wtp.set_config(s, other, config(remote_backup=True), actor="a", now=now)
        r = agent.get(f"/agent/v1/wtp/blobs/{sha}", headers=other_h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "blob_not_found"
        r = agent.post(
            "/agent/v1/wtp/manifest", headers=web_h, json={"files": [{"path": "/x", "sha256": "z"}]}
        )
        assert r.status_code == 422 and "sha256" in r.json()["error"]["message"]
        too_big = b"x" * (8 * 1024 * 1024 + 1)
        r = agent.put(
            f"/agent/v1/wtp/blobs/{hashlib.sha256(too_big).hexdigest()}", headers=web_h, content=too_big
        )
        assert r.status_code == 413
        # a server's copy is capped: a blob beyond the cap is refused, nothing half-written stays
        monkeypatch.setattr(remote, "MAX_SERVER_BYTES", len(content) + 10)
        big = b"y" * 64
        r = agent.put(f"/agent/v1/wtp/blobs/{hashlib.sha256(big).hexdigest()}", headers=web_h, content=big)
        assert r.status_code == 507 and r.json()["error"]["code"] == "wtp_backup_full"
    stored = ctx.settings.data_dir / "wtp-backup" / web / "blobs" / sha[:2] / sha
    assert stored.read_bytes() == content
    assert not (ctx.settings.data_dir / "wtp-backup" / other / "blobs").exists()
    blobs = [p.name for p in (ctx.settings.data_dir / "wtp-backup" / web / "blobs").rglob("*") if p.is_file()]
    assert blobs == [sha], "only the verified blob is stored (no temporary files left)"


# ---- console (SQLite) --------------------------------------------------------------------------------


def test_console_wtp_pages(ctx: ManagerContext, client: TestClient) -> None:
    web = add_server(ctx, "web-1")
    csrf = console_login(client)
    page = f"/console/wtp/servers/{web}"

    def post(url: str, **data: Any) -> str:
        r = client.post(url, data={"csrf": csrf, "next": page, **data}, follow_redirects=True)
        assert r.status_code == 200, r.text
        return r.text

    html = client.get("/console/wtp").text
    assert 'data-nav="wtp"' in html and "Web Tamper Protection" in html
    assert f'<option value="{web}">web-1' in html, "an online unprotected server can be added"
    html = post("/console/wtp/enable", server_ids=web)
    assert "Web tamper protection enabled on 1 server" in html

    html = post(f"{page}/directories/add", path="/var/www/html", excluded_subdirs="cache; upload",
                excluded_types="log;pid", excluded_paths="")  # fmt: skip
    assert "Protected directory /var/www/html saved" in html
    assert 'data-dir="/var/www/html"' in html and "cache; upload" in html
    html = post(f"{page}/directories/add", path="/etc")
    assert "system directory" in html, "a refused change comes back with the reason"
    html = post(f"{page}/directories/add", path="/srv/x", excluded_types="a.b")
    assert "dirs.1.excluded_types" in html
    settings = {
        "backup_path": "/srv/wtp-backup",
        "privileged": "/usr/bin/rsync\n/usr/bin/git",
        "privileged_children": "1",
        "schedule_enabled": "1",
        "weekdays": ["6", "7"],
        "windows": "02:00-03:00; 04:00-04:30",
    }
    html = post(f"{page}/settings", **settings)
    assert "WTP settings saved" in html
    html = post(f"{page}/settings", backup_path="/var/www/html/bk", windows="")
    assert "backup_path" in html and "overlaps" in html
    html = post(f"{page}/settings", backup_path="/srv/b", windows="02:00-02:02")
    assert "shorter than 5 minutes" in html
    html = post(f"{page}/settings", backup_path="/srv/b", windows="nonsense")
    assert "HH:MM-HH:MM" in html
    with ctx.uow() as s:
        _server, cfg, active = wtp.config_of(s, web)
    assert active and cfg.privileged == ["/usr/bin/rsync", "/usr/bin/git"] and cfg.privileged_children
    assert cfg.schedule.weekdays == [6, 7] and [w.start for w in cfg.schedule.windows] == ["02:00", "04:00"]
    assert cfg.dirs[0].excluded_types == ["log", "pid"] and cfg.backup_path == "/srv/wtp-backup"

    html = post(f"{page}/directories/suspend", path="/var/www/html")
    assert "/var/www/html suspended" in html and "Suspended" in html
    html = post(f"{page}/directories/resume", path="/var/www/html")
    assert "protected again" in html

    t0 = ctx.clock.now()
    tamper = {"path": "/var/www/html/<b>x</b>.php", "action": "created", "outcome": "removed",
              "process": {"pid": 9, "exe": "/usr/bin/curl", "user": "www-data"}}  # fmt: skip
    send(ctx, web, record("wtp_tamper", "t1", tamper, t0))
    html = client.get("/console/wtp").text
    row = re.search(r'<tr data-server-id="' + web + r'".*?</tr>', html, re.S)
    assert row and 'data-count="tampers"><span class="risk-num">1<' in row.group(0)
    assert "/usr/bin/curl" in html and "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "/usr/bin/curl" not in client.get("/console/wtp", params={"q": "nomatch"}).text

    html = post(f"{page}/directories/remove", path="/var/www/html")
    assert "no longer protected" in html
    html = post("/console/wtp/disable", server_id=web)
    assert "disabled (configuration kept)" in html
    r = client.post("/console/wtp/disable", data={"server_id": web}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    assert client.get("/console/wtp/servers/nope").status_code == 404


def test_console_wtp_readonly(ctx: ManagerContext, client: TestClient) -> None:
    web = add_server(ctx, "web-1")
    with ctx.uow() as s:
        wtp.set_config(s, web, config(), actor="a", now=ctx.clock.now())
    console_login(client, "viewer")
    html = client.get(f"/console/wtp/servers/{web}").text
    assert "/var/www/html" in html and "/directories/add" not in html and "Save settings" not in html
    assert "/console/wtp/enable" not in client.get("/console/wtp").text


def test_deleting_a_server_removes_its_wtp_and_ransomware_rows(any_ctx: ManagerContext) -> None:
    from hostward.manager.ransomware import service as rw
    from hostward.manager.ransomware.models import RansomwareServer
    from hostward.manager.ransomware.schemas import PolicyIn
    from hostward.manager.servers import service as servers
    from hostward.manager.wtp.models import WtpEvent, WtpServer

    ctx = any_ctx
    web = add_server(ctx, "web-1")
    now = ctx.clock.now()
    with ctx.uow() as s:
        wtp.set_config(s, web, config(), actor="a", now=now)
        wtp.enable_one(s, web, now, ctx.settings, actor="a")
        policy = rw.create_policy(s, PolicyIn(name="p", protected_dirs=["/srv"]), actor="a", now=now)
        rw.enable_one(s, web, policy.id, now, actor="a")
        policy_id = policy.id
    tamper = {"path": "/var/www/html/a", "action": "modified", "outcome": "restored"}
    assert send(ctx, web, record("wtp_tamper", "t1", tamper, now)) == ["accepted"]
    with ctx.uow() as s:
        servers.delete_server(s, web, actor="a")
    with ctx.uow() as s:
        assert s.get(WtpServer, web) is None and s.get(RansomwareServer, web) is None
        assert s.scalars(select(WtpEvent)).all() == []
        assert s.scalar(select(Quota).where(Quota.edition == "wtp")).server_id is None  # type: ignore[union-attr]
        rw.delete_policy(s, policy_id, actor="a", now=now)  # no longer in use


def test_server_detail_page_shows_wtp_and_ransomware_status(ctx: ManagerContext, client: TestClient) -> None:
    from hostward.manager.ransomware import service as rw
    from hostward.manager.ransomware.schemas import PolicyIn

    web = add_server(ctx, "web-1")
    plain = add_server(ctx, "plain-1")
    now = ctx.clock.now()
    with ctx.uow() as s:
        wtp.set_config(s, web, config(), actor="a", now=now)
        wtp.enable_one(s, web, now, ctx.settings, actor="a")
        policy = rw.create_policy(
            s,
            PolicyIn.model_validate({"name": "site", "protected_dirs": ["/var/www/html"]}),
            actor="a",
            now=now,
        )
        rw.enable_one(s, web, policy.id, now, actor="a")
    console_login(client)
    html = client.get(f"/console/servers/{plain}").text
    assert 'id="risk-counts"' in html and "file-protection-status" not in html  # nothing to show
    html = client.get(f"/console/servers/{web}").text
    assert 'data-wtp-state="pending"' in html and 'data-ransomware-state="pending"' in html
    # a filesystem without the immutable attribute: said on the server page, per directory
    t0 = now - timedelta(seconds=10)
    status = {
        "state": "protected",
        "message": "immutable not supported; watch-and-restore only: /var/www/html",
        "dirs": [{"path": "/var/www/html", "state": "watch_only", "files": 12}],
        "backup": {"files": 12, "bytes": 4096, "built_at": t0.isoformat()},
    }
    tamper = {"path": "/var/www/html/index.html", "action": "modified", "outcome": "restored",
              "directory": "/var/www/html", "process": None, "latency_ms": 4.0,
              "occurred_at": t0.isoformat()}  # fmt: skip
    rw_status = {"state": "protected", "message": "", "baits": 8}
    acks = send(ctx, web, record("wtp_status", "s1", status, t0), record("wtp_tamper", "t1", tamper, t0),
                record("ransomware_status", "r1", rw_status, t0))  # fmt: skip
    assert acks == ["accepted"] * 3
    html = client.get(f"/console/servers/{web}").text
    block = html[html.index('id="file-protection-status"') :]
    assert 'data-wtp-state="protected"' in block and 'data-wtp-dir-state="watch_only"' in block
    assert "no immutable attribute" in block and "immutable not supported; watch-and-restore only" in block
    assert "12 files, 4096 bytes" in block and ">1 rolled back<" in block
    assert 'data-ransomware-state="protected"' in block and "8 baits" in block and "policy site" in block
    # a full backup disk: protection could not start, the reason is on the server page
    full = {"state": "error", "message": "backup_disk_full: backup disk full at /srv/wtp-backup/blobs: "
            "No space left on device", "dirs": [{"path": "/var/www/html", "state": "error", "files": 0}],
            "backup": {}}  # fmt: skip
    rw_err = {
        "state": "error",
        "message": "cannot watch the protected directories: no such directory",
        "baits": 0,
    }
    send(ctx, web, record("wtp_status", "s2", full, now), record("ransomware_status", "r2", rw_err, now))
    block = client.get(f"/console/servers/{web}").text
    block = block[block.index('id="file-protection-status"') :]
    assert 'data-wtp-state="error"' in block and "No space left on device" in block and "none yet" in block
    assert 'data-ransomware-state="error"' in block and "cannot watch the protected directories" in block
