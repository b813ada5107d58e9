"""FIM on the manager: record ingest, per-server counts, accept, policy validation, API and console.

Service tests run on SQLite and PostgreSQL; records arrive through the real ingest path
(``ingest_batch`` with ``load_builtin_handlers``), as they do from an agent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.core.errors import Conflict, Invalid
from hostward.manager.agentlink import ingest
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit.models import AuditRecord
from hostward.manager.context import ManagerContext
from hostward.manager.fim import service as fim
from hostward.manager.fim.models import FimChange
from hostward.manager.fim.schemas import describe
from hostward.manager.policies import service as policies
from hostward.manager.policies.models import PolicyGroup
from hostward.manager.scheduler.retention import purge_expired
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent, RawEventBatch
from tests.fakes.servers import enrolled_server
from tests.managerapi import api_client, api_login, console_login, ready_ctx

OLD = "a" * 64
NEW = "b" * 64


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    return ready_ctx(request)


def change_record(path: str, *, key: str, at: datetime, **overrides: Any) -> dict[str, Any]:
    """A ``fim_change`` RecordEvent as the agent's detector sends it (``change_dict`` + important)."""
    data: dict[str, Any] = {
        "path": path,
        "action": "changed",
        "operation": "modify",
        "label": "change",
        "type": "file",
        "attributes": ["sha256", "size", "mtime", "ctime"],
        "old": {"sha256": OLD, "size": 5, "mtime": "x", "ctime": "x"},
        "new": {"sha256": NEW, "size": 8, "mtime": "y", "ctime": "y"},
        "process": {"pid": 4242, "exe": "/usr/bin/vi", "uid": 0, "user": "root", "cmdline": "vi " + path},
        "important": False,
    }
    data.update(overrides)
    return {"kind": "record", "key": key, "occurred_at": at.isoformat(), "topic": "fim_change", "data": data}


def fim_alarm(path: str, *, key: str, at: datetime) -> dict[str, Any]:
    return AlarmEvent(
        key=key,
        occurred_at=at,
        event_class="fileprotect_0004",
        title=f"File changed: {path}",
        fingerprint=f"fileprotect_0004:{NEW}:{path}",
        evidence={"file_path": path, "file_hash": NEW, "old_hash": OLD},
    ).model_dump(mode="json")


def protected_server(ctx: ManagerContext, name: str, edition: str | None = "premium") -> str:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now, name=name)
        server.edition = edition
        return server.id


def send(ctx: ManagerContext, server_id: str, *events: dict[str, Any]) -> list[str]:
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest.ingest_batch(s, server, RawEventBatch(events=list(events)), ctx.clock.now())
    return [a.status for a in acks]


# ---- service (SQLite and PostgreSQL) -----------------------------------------------------------------


def test_records_counts_and_filters(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    web = protected_server(ctx, "web-1")
    protected_server(ctx, "db-1", edition="enterprise")
    protected_server(ctx, "basic-1", edition="basic")
    t0 = ctx.clock.now() - timedelta(minutes=10)
    statuses = send(
        ctx,
        web,
        change_record("/var/www/index.html", key="r1", at=t0),
        change_record("/var/www/new.php", key="r2", at=t0 + timedelta(seconds=1), action="added",
                      operation="create", old={}, new={"sha256": NEW, "size": 3, "mode": "0644"},
                      attributes=[]),
        change_record("/usr/bin/ls", key="r3", at=t0 + timedelta(seconds=2), label="package_update",
                      package={"manager": "dpkg", "name": "coreutils", "matches": True}, important=True),
        change_record("/var/www/img", key="r4", at=t0 + timedelta(seconds=3), type="directory",
                      attributes=["mode"], old={"mode": "0755"}, new={"mode": "0777"},
                      operation="attributes"),
    )  # fmt: skip
    assert statuses == ["accepted"] * 4
    # A resend is a duplicate; a record the manager cannot use is rejected alone.
    assert send(ctx, web, change_record("/var/www/index.html", key="r1", at=t0)) == ["duplicate"]
    bad = change_record("relative/x", key="bad", at=t0, operation="explode")
    assert send(ctx, web, bad, change_record("/etc/passwd", key="r5", at=t0, important=True)) == [
        "rejected",
        "accepted",
    ]
    with ctx.uow() as s:
        hosts, total = fim.list_hosts(s)
        by_name = {h.server.name: h for h in hosts}
        assert total == 2 and set(by_name) == {"web-1", "db-1"}  # basic has no FIM and no records
        assert hosts[0].server.name == "web-1"  # most recent change first
        h = by_name["web-1"]
        assert (h.total, h.alarmed, h.package_updates, h.accepted) == (5, 4, 1, 0)
        assert h.last_change_path == "/var/www/img"
        assert by_name["db-1"].total == 0 and by_name["db-1"].last_change_at is None
        rows, n = fim.list_changes(s, server_id=web, classification="package_update")
        assert n == 1 and rows[0][0].package == {"manager": "dpkg", "name": "coreutils", "matches": True}
        rows, n = fim.list_changes(s, server_id=web, change_type="dir")
        assert n == 1 and rows[0][0].action == "attributes" and describe(rows[0][0]) == "mode 0755 → 0777"
        rows, n = fim.list_changes(s, q="www", action="create")
        assert n == 1 and rows[0][0].new_hash == NEW and rows[0][0].old_hash is None
        change = fim.list_changes(s, q="index.html")[0][0][0]
        assert (change.old_hash, change.new_hash) == (OLD, NEW)
        assert (change.process_pid, change.process_exe, change.process_user) == (4242, "/usr/bin/vi", "root")
        assert describe(change).startswith("sha256 aaaaaaaaaaaa… → bbbbbbbbbbbb…; size 5 → 8")
        with pytest.raises(Invalid):
            fim.list_changes(s, action="explode")
        stats = fim.statistics(s)
        assert stats["servers_monitored"] == 2 and stats["changes"] == 5 and stats["alarmed"] == 4
        assert fim.list_hosts(s, q="db")[1] == 1


def test_accept_queues_command_marks_records_and_handles_alarms(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    web = protected_server(ctx, "web-1")
    t0 = ctx.clock.now() - timedelta(minutes=5)
    send(
        ctx,
        web,
        change_record("/var/www/index.html", key="r1", at=t0),
        fim_alarm("/var/www/index.html", key="a1", at=t0),
        change_record("/var/www/sub/page.html", key="r2", at=t0),
        fim_alarm("/var/www/sub/page.html", key="a2", at=t0),
        change_record("/var/www/gone.html", key="r3", at=t0, action="removed", operation="delete",
                      old={"sha256": OLD}, new={}, attributes=[]),
        change_record("/etc/hosts", key="r4", at=t0),
        fim_alarm("/etc/hosts", key="a4", at=t0),
    )  # fmt: skip
    now = ctx.clock.now()
    with ctx.uow() as s:
        result = fim.accept(
            s, web, ["/var/www/index.html", "/var/www/sub", "/var/www/gone.html"], actor="alice", now=now
        )
        assert (result.records_accepted, result.alarms_handled) == (3, 2)
        command = s.get(AgentCommand, result.command_id)
        assert command is not None and command.kind == "fim_accept" and command.status == "queued"
        assert command.payload["paths"] == ["/var/www/index.html", "/var/www/sub", "/var/www/gone.html"]
        # What the operator saw: the new hash of a modified file, "" for a deleted one; nothing for a
        # directory without records of its own.
        assert command.payload["expected"] == {"/var/www/index.html": NEW, "/var/www/gone.html": ""}
        assert command.payload["actor"] == "alice"
        rows = {c.path: c for c, _ in fim.list_changes(s, server_id=web)[0]}
        assert rows["/var/www/sub/page.html"].classification == "accepted"
        assert rows["/var/www/index.html"].accepted_by == "alice"
        assert rows["/var/www/index.html"].accept_command_id == command.id
        assert rows["/etc/hosts"].classification == "alarmed"
        open_alarms = s.scalars(select(Alarm).where(Alarm.status == "unhandled")).all()
        assert [a.evidence["file_path"] for a in open_alarms] == ["/etc/hosts"]
        audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "fim_accept")).one()
        assert audit.target_id == web and audit.actor == "alice"
    # The agent's confirmation is a "baseline" record; it is not counted as a change.
    send(
        ctx,
        web,
        change_record("/var/www/index.html", key="b1", at=now, action="baseline", operation="accept",
                      old={}, new={"sha256": NEW, "size": 8}, attributes=[], actor="alice", process=None),
    )  # fmt: skip
    with ctx.uow() as s:
        rows, n = fim.list_changes(s, server_id=web, classification="baseline")
        assert n == 1 and rows[0][0].new_hash == NEW and rows[0][0].accepted_by == "alice"
        assert describe(rows[0][0]) == f"new baseline sha256 {NEW[:12]}…"
        host = fim.list_hosts(s)[0][0]
        assert (host.total, host.alarmed, host.accepted) == (4, 1, 3)


def test_unstorable_text_is_cleaned_not_a_poison_pill(any_ctx: ManagerContext) -> None:
    """PostgreSQL text takes no NUL: such a record is stored cleaned (a refused INSERT would fail its
    whole batch at every resend); a lone surrogate is rejected alone by validation."""
    ctx = any_ctx
    web = protected_server(ctx, "web-1")
    process = {"pid": 1, "exe": "/bin/x\x00y", "user": "root", "cmdline": "a\x00b"}
    at = ctx.clock.now()
    nul = change_record("/srv/bad\x00name.txt", key="nul", at=at, process=process, old={"sha256": "zz"})
    surrogate = change_record("/srv/bad\udc80.txt", key="sur", at=at)
    assert send(ctx, web, nul, surrogate) == ["accepted", "rejected"]
    with ctx.uow() as s:
        (change, _), *_ = fim.list_changes(s, server_id=web)[0]
        assert change.path == "/srv/bad\\x00name.txt"
        assert (change.process_exe, change.process_cmdline) == ("/bin/x\\x00y", "a\\x00b")
        assert change.old_hash is None  # not a SHA-256: kept out of the hash column


def test_accept_refuses_servers_without_fim(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    basic = protected_server(ctx, "basic-1", edition="basic")
    none = protected_server(ctx, "none-1", edition=None)
    with ctx.uow() as s, pytest.raises(Conflict, match="enterprise edition"):
        fim.accept(s, basic, ["/etc/passwd"], actor="a", now=ctx.clock.now())
    with ctx.uow() as s, pytest.raises(Conflict):
        fim.accept(s, none, ["/etc/passwd"], actor="a", now=ctx.clock.now())
    with ctx.uow() as s, pytest.raises(Invalid):
        fim.accept(s, basic, ["etc/passwd"], actor="a", now=ctx.clock.now())


def test_policy_presets_and_validation(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    with ctx.uow() as s:
        keys = {g.edition: {p.key for p in g.policies} for g, _ in policies.list_groups(s)}
        assert "file_protection" in keys["enterprise"] and "file_protection" in keys["premium"]
        assert "file_protection" not in keys["basic"]
        premium = policies.default_group(s, "premium")
        group = policies.copy_group(s, premium.id, "fim-custom", "", actor="t")
        policy = policies.update_policy(
            s,
            group.id,
            "file_protection",
            enabled=True,
            settings={
                "directories": [
                    {"path": "/var/www/", "ignore": ["*.log", " cache "], "operations": ["modify", "modify"]}
                ],
                "rate_bytes_per_s": None,
            },
            actor="t",
        )
        assert policy.settings["directories"] == [
            {"path": "/var/www", "alias": "", "recursive": True, "ignore": ["*.log", "cache"],
             "operations": ["modify"]}
        ]  # fmt: skip
        assert policy.settings["important_files"] is True and policy.settings["rate_bytes_per_s"] is None
        group_id = group.id
    refused = [
        ({"directories": [{"path": "var/www"}]}, "not absolute"),
        ({"directories": [{"path": "/proc/1"}]}, "pseudo file system"),
        ({"directories": [{"path": "/"}]}, "whole file system"),
        ({"directories": [{"path": "/a"}, {"path": "/a/"}]}, "listed twice"),
        ({"directories": [{"path": f"/d{i}"} for i in range(51)]}, "directories"),
        ({"directories": [{"path": "/a", "operations": ["explode"]}]}, "operations"),
        ({"directories": [{"path": "/a", "operations": []}]}, "operations"),
        ({"directories": [{"path": "/a/../etc"}]}, "'..'"),
        ({"extra_files": ["/etc/x\n"]}, "line break"),
        ({"rate_bytes_per_s": 10}, "rate_bytes_per_s"),
        ({"surprise": 1}, "surprise"),
    ]
    for settings, reason in refused:
        with ctx.uow() as s, pytest.raises(Invalid, match=re.escape(reason)):
            policies.update_policy(s, group_id, "file_protection", enabled=None, settings=settings, actor="t")
    server_id = protected_server(ctx, "p-1")
    with ctx.uow() as s:
        group = s.get(PolicyGroup, group_id)
        assert group is not None
        server = s.get(Server, server_id)
        assert server is not None
        server.policy_group_id = group_id
        bundle = policies.bundle_for(s, server)
        assert bundle.policies["file_protection"].settings["directories"][0]["path"] == "/var/www"


def test_retention_purges_old_records(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    web = protected_server(ctx, "web-1")
    now = ctx.clock.now()
    send(
        ctx,
        web,
        change_record("/old", key="o", at=now - timedelta(days=fim.CHANGE_RETENTION_DAYS + 1)),
        change_record("/new", key="n", at=now - timedelta(days=1)),
    )
    with ctx.uow() as s:
        counts = purge_expired(s, now, ctx.settings)
        assert counts["fim_changes"] == 1
        assert [c.path for c in s.scalars(select(FimChange))] == ["/new"]


# ---- REST API and console (SQLite) -------------------------------------------------------------------


@pytest.fixture
def client(ctx: ManagerContext) -> Iterator[TestClient]:
    with api_client(ctx) as c:
        yield c


def test_api_hosts_changes_and_accept(ctx: ManagerContext, client: TestClient) -> None:
    web = protected_server(ctx, "web-1")
    basic = protected_server(ctx, "basic-1", edition="basic")
    t0 = ctx.clock.now() - timedelta(minutes=1)
    send(
        ctx,
        web,
        change_record("/var/www/a.html", key="r1", at=t0),
        fim_alarm("/var/www/a.html", key="a1", at=t0),
    )
    admin, viewer = api_login(client), api_login(client, "viewer")

    hosts = client.get("/api/v1/fim/hosts", headers=viewer).json()
    assert hosts["total"] == 1 and hosts["items"][0]["server_id"] == web
    assert hosts["items"][0]["alarmed"] == 1 and hosts["items"][0]["last_change_path"] == "/var/www/a.html"
    changes = client.get("/api/v1/fim/changes", headers=viewer, params={"server_id": web}).json()
    item = changes["items"][0]
    assert changes["total"] == 1 and item["server_name"] == "web-1"
    assert (item["old_hash"], item["new_hash"], item["classification"]) == (OLD, NEW, "alarmed")
    assert item["description"].startswith("sha256 ")
    one = client.get(f"/api/v1/fim/changes/{item['id']}", headers=viewer).json()
    assert one["path"] == "/var/www/a.html"
    assert client.get("/api/v1/fim/changes/nope", headers=viewer).status_code == 404
    r = client.get("/api/v1/fim/changes", headers=viewer, params={"classification": "weird"})
    assert r.status_code == 422 and "classification" in r.json()["error"]["message"]
    stats = client.get("/api/v1/fim/statistics", headers=viewer).json()
    assert stats["alarmed"] == 1 and stats["servers_monitored"] == 1

    body = {"server_id": web, "paths": ["/var/www/a.html"]}
    assert client.post("/api/v1/fim/accept", headers=viewer, json=body).status_code == 403
    r = client.post("/api/v1/fim/accept", headers=admin, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["records_accepted"] == 1 and r.json()["alarms_handled"] == 1
    r = client.post("/api/v1/fim/accept", headers=admin, json={"server_id": web, "paths": ["rel/path"]})
    assert r.status_code == 422 and "absolute" in r.json()["error"]["message"]
    r = client.post("/api/v1/fim/accept", headers=admin, json={"server_id": basic, "paths": ["/etc/passwd"]})
    assert r.status_code == 409
    r = client.post("/api/v1/fim/accept", headers=admin, json={"server_id": "nope", "paths": ["/etc/passwd"]})
    assert r.status_code == 404
    r = client.post("/api/v1/fim/accept", headers=admin, json={"server_id": web, "paths": []})
    assert r.status_code == 422


def test_console_page_filters_detail_and_accept(ctx: ManagerContext, client: TestClient) -> None:
    web = protected_server(ctx, "web-1")
    t0 = ctx.clock.now() - timedelta(minutes=1)
    send(
        ctx,
        web,
        change_record("/var/www/a.html", key="r1", at=t0),
        fim_alarm("/var/www/a.html", key="a1", at=t0),
        change_record("/usr/bin/ls", key="r2", at=t0, label="package_update", important=True,
                      package={"manager": "dpkg", "name": "coreutils", "matches": True}, process=None),
        change_record("/var/www/<b>x</b>", key="r3", at=t0, action="removed", operation="delete",
                      old={"sha256": OLD}, new={}, attributes=[]),
    )  # fmt: skip
    csrf = console_login(client)
    html = client.get("/console/fim").text
    assert 'data-nav="fim"' in html and "File Integrity Monitoring" in html
    host = re.search(r'<tr data-server-id="' + web + r'".*?</tr>', html, re.S)
    assert host and 'data-count="total">3<' in host.group(0)
    assert "/var/www/a.html" in html and "/usr/bin/vi" in html and "aaaaaaaaaaaa…" in html
    assert 'data-classification="package_update"' in html and 'data-classification="alarmed"' in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html  # paths are escaped
    filtered = client.get("/console/fim", params={"classification": "package_update"}).text
    assert "/usr/bin/ls" in filtered and "/var/www/a.html" not in filtered
    assert "/var/www/a.html" in client.get("/console/fim", params={"q": "a.html", "server_id": web}).text
    # Bad filter values are ignored, not a 500.
    assert client.get("/console/fim", params={"action": "explode"}).status_code == 200

    with ctx.uow() as s:
        change = fim.list_changes(s, q="a.html")[0][0][0]
        change_id = change.id
    detail = client.get(f"/console/fim/changes/{change_id}").text
    assert "/usr/bin/vi" in detail and NEW in detail and "Accept as new baseline" in detail

    r = client.post(
        "/console/fim/accept",
        data={"csrf": csrf, "change_ids": [change_id], "next": "/console/fim"},
        follow_redirects=True,
    )
    assert r.status_code == 200 and "Accepted as the new baseline: 1 path on 1 server" in r.text
    with ctx.uow() as s:
        assert fim.get_change(s, change_id).classification == "accepted"
        assert s.scalars(select(AgentCommand).where(AgentCommand.kind == "fim_accept")).one()
    r = client.post("/console/fim/accept", data={"change_ids": [change_id]}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token


def test_console_readonly_sees_no_accept(ctx: ManagerContext, client: TestClient) -> None:
    web = protected_server(ctx, "web-1")
    send(ctx, web, change_record("/var/www/a.html", key="r1", at=ctx.clock.now()))
    console_login(client, "viewer")
    html = client.get("/console/fim").text
    assert "/var/www/a.html" in html and "/console/fim/accept" not in html
