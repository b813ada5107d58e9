"""Login security on the manager: blocked-IP records and unblock commands, whitelists and their limits,
the agent bundle section, the abnormal-login rule and the login-alarm actions (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hostward.core.errors import Conflict, Invalid
from hostward.core.ids import new_id
from hostward.manager.agentlink.ingest import ingest_batch, load_builtin_handlers
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec import abnormal
from hostward.manager.loginsec import service as loginsec
from hostward.manager.loginsec.models import BlockedIp
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent, RawEventBatch, RecordEvent
from tests.fakes.servers import enrolled_server


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    ctx: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with ctx.uow() as s:
        policies.ensure_presets(s)
    load_builtin_handlers()
    return ctx


def _protected(ctx: ManagerContext, name: str = "web-1", edition: str = "premium") -> str:
    now = ctx.clock.now()
    with ctx.uow() as s:
        quotas.add_quotas(
            s, edition, 1, expires_at=None, region=None, now=now, settings=ctx.settings, actor="t"
        )
        server = enrolled_server(s, now, name=name)
        protection.enable_one(s, server.id, edition, now, ctx.settings, actor="t", trigger_scan=False)
        return server.id


def _record(topic: str, at: datetime | None = None, **data: Any) -> dict[str, Any]:
    event = RecordEvent(key=new_id(), occurred_at=at or datetime.now(UTC), topic=topic, data=data)
    return event.model_dump(mode="json")


def _send(ctx: ManagerContext, server_id: str, *events: dict[str, Any]) -> list[str]:
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        acks = ingest_batch(s, server, RawEventBatch(events=list(events)), ctx.clock.now())
    return [f"{a.status}:{a.reason}" if a.reason else a.status for a in acks]


def _block(network: str = "203.0.113.7/32", **extra: Any) -> dict[str, Any]:
    until = (datetime.now(UTC) + timedelta(hours=12)).isoformat()
    data = {"action": "blocked", "network": network, "service": "sshd", "until": until, "attempts": 5}
    data.update(extra)
    return _record("blocked_ip", **data)


def test_block_unblock_flow(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sid = _protected(ctx)
    assert _send(ctx, sid, _block(reason="5 failures in 30 s", users=["root", "admin"])) == ["accepted"]
    assert _send(ctx, sid, _block("2001:db8:1:2::/64")) == ["accepted"]
    with ctx.uow() as s:
        rows, total = loginsec.list_blocked(s, server_id=sid)
        assert total == 2
        by_source = {r.source: r for r, _ in rows}
        v4 = by_source["203.0.113.7"]
        assert (v4.status, v4.times_blocked, v4.service, v4.users) == (
            "blocked",
            1,
            "sshd",
            ["root", "admin"],
        )
        assert "2001:db8:1:2::/64" in by_source
        v4_id = v4.id
        assert loginsec.list_blocked(s, q="2001:db8")[1] == 1
        assert loginsec.blocked_counts(s) == {"blocked": 2, "unblocking": 0, "unblocked": 0}
    with ctx.uow() as s:
        (out,) = loginsec.unblock(s, [v4_id], actor="alice", now=ctx.clock.now())
        assert out.ok
        row = s.get(BlockedIp, v4_id)
        assert row is not None and row.status == "unblocking"
        command = s.scalars(select(AgentCommand).where(AgentCommand.kind == "unblock_ip")).one()
        assert command.payload == {"blocked_ip_id": v4_id, "network": "203.0.113.7/32", "service": "sshd"}
        assert s.info["wake"] == {sid}
    with ctx.uow() as s:
        again, missing = loginsec.unblock(s, [v4_id, "nope"], actor="alice", now=ctx.clock.now())
        assert not again.ok and isinstance(again.error, Conflict)
        assert not missing.ok and missing.error is not None and missing.error.code == "not_found"
        assert [r.action for r in audit.list_records(s, action="unblock_ip")[0]] == ["unblock_ip"]
    # the agent confirms through its ledger record
    confirm = _record(
        "blocked_ip", action="unblocked", network="203.0.113.7/32", blocked_ip_id=v4_id, by="manual"
    )
    assert _send(ctx, sid, confirm) == ["accepted"]
    with ctx.uow() as s:
        row = s.get(BlockedIp, v4_id)
        assert row is not None and (row.status, row.unblock_reason) == ("unblocked", "manual")
        (done,) = loginsec.unblock(s, [v4_id], actor="a", now=ctx.clock.now())
        assert not done.ok and isinstance(done.error, Conflict)
    # a new block of the same source reuses the row and counts
    assert _send(ctx, sid, _block()) == ["accepted"]
    expired = _record("blocked_ip", action="expired", network="2001:db8:1:2::/64")
    assert _send(ctx, sid, expired) == ["accepted"]
    with ctx.uow() as s:
        rows, _ = loginsec.list_blocked(s, server_id=sid)
        by_source = {r.source: r for r, _ in rows}
        assert (by_source["203.0.113.7"].status, by_source["203.0.113.7"].times_blocked) == ("blocked", 2)
        assert by_source["2001:db8:1:2::/64"].unblock_reason == "expired"
    bad = _record("blocked_ip", action="exploded", network="1.2.3.4/32")
    assert _send(ctx, sid, bad)[0].startswith("rejected:action must be")
    assert _send(ctx, sid, _record("blocked_ip", action="blocked", network="not-an-ip"))[0].startswith(
        "rejected"
    )


def test_failed_unblock_command_is_reported(ctx: ManagerContext) -> None:
    load_builtin_handlers()
    with ctx.uow() as s:
        policies.ensure_presets(s)
    sid = _protected(ctx)
    _send(ctx, sid, _block())
    with ctx.uow() as s:
        ((row, _),) = loginsec.list_blocked(s)[0]
        loginsec.unblock(s, [row.id], actor="a", now=ctx.clock.now())
        command = s.scalars(select(AgentCommand).where(AgentCommand.kind == "unblock_ip")).one()
        command.status, command.detail = "failed", "nft: permission denied"
        s.flush()
        assert loginsec.unblock_error(s, row) == "agent: nft: permission denied"
        # a stuck unblock can be retried
        assert loginsec.unblock(s, [row.id], actor="a", now=ctx.clock.now())[0].ok


def test_login_whitelist_validation_and_limits(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sid = _protected(ctx)
    now = ctx.clock.now()
    with ctx.uow() as s:
        for bad, named in (
            ("10.0.0.1, 300.1.1.1", "300.1.1.1"),
            ("10.0.0.0/33", "10.0.0.0/33"),
            ("fd00::1-10.0.0.1", "fd00::1-10.0.0.1"),
            ("10.0.0.9-10.0.0.1", "10.0.0.9-10.0.0.1"),
            ("example.com", "example.com"),
        ):
            with pytest.raises(Invalid, match=named.replace(".", r"\.")):
                loginsec.add_login_whitelist(
                    s, ips=bad, server_ids=None, username=None, remarks="", actor="a", now=now
                )
        with pytest.raises(Invalid, match="user name"):
            loginsec.add_login_whitelist(
                s, ips="10.1.1.1", server_ids=None, username="two words", remarks="", actor="a", now=now
            )
        entry = loginsec.add_login_whitelist(
            s,
            ips="198.51.100.0/24, 2001:db8::/48 ::ffff:192.0.2.1 10.0.0.0-10.0.0.3",
            server_ids=None,
            username=None,
            remarks="office",
            actor="a",
            now=now,
        )
        assert entry.networks == ["198.51.100.0/24", "2001:db8::/48", "192.0.2.1/32", "10.0.0.0/30"]
        loginsec.add_login_whitelist(
            s, ips="192.0.2.50", server_ids=[sid], username="deploy", remarks="", actor="a", now=now
        )
        section = policies.bundle_for(s, s.get(Server, sid)).global_settings["login_security"]  # type: ignore[arg-type]
        assert section["login_whitelist"] == sorted(entry.networks)
        assert section["login_whitelist_users"] == [{"user": "deploy", "networks": ["192.0.2.50/32"]}]
        # 4 global + 1 for the server = 5; 46 more fit on the server, the 47th does not
        many = [f"192.0.2.{i}" for i in range(100, 145)]
        loginsec.add_login_whitelist(
            s, ips=many, server_ids=[sid], username=None, remarks="", actor="a", now=now
        )
        with pytest.raises(Invalid, match="exceed 50"):
            loginsec.add_login_whitelist(
                s, ips="192.0.2.200", server_ids=None, username=None, remarks="", actor="a", now=now
            )
        assert len(loginsec.list_login_whitelist(s, sid)) == 3
        loginsec.delete_login_whitelist(s, entry.id, actor="a", now=now)
        assert len(loginsec.list_login_whitelist(s)) == 2


def test_ssh_whitelist_bundle_and_push(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sid = _protected(ctx)
    now = ctx.clock.now()
    with ctx.uow() as s:
        before = s.get(Server, sid).policy_version  # type: ignore[union-attr]
        with pytest.raises(Invalid, match="at most 10"):
            loginsec.put_ssh_whitelist(
                s, sid, [{"network": f"10.0.0.{i}"} for i in range(11)], actor="a", now=now
            )
        with pytest.raises(Invalid, match=r"'10\.0\.0\.300'"):
            loginsec.put_ssh_whitelist(s, sid, [{"network": "10.0.0.300"}], actor="a", now=now)
        with pytest.raises(Invalid, match="listed twice"):
            loginsec.put_ssh_whitelist(
                s, sid, [{"network": "10.0.0.1"}, {"network": "10.0.0.1/32"}], actor="a", now=now
            )
        entries = loginsec.put_ssh_whitelist(
            s,
            sid,
            [{"network": "10.9.0.3"}, {"network": "fd00:9::/64", "enabled": False, "remarks": "lab"}],
            actor="a",
            now=now,
        )
        assert [(e.network, e.enabled) for e in entries] == [("10.9.0.3/32", True), ("fd00:9::/64", False)]
        server = s.get(Server, sid)
        assert server is not None and server.policy_version != before
        bundle = policies.bundle_for(s, server)
        assert bundle.global_settings["login_security"]["ssh_whitelist"] == ["10.9.0.3/32"]
        assert bundle.policies["login_security"].settings["lock_minutes"] == 720
        pushes = s.scalars(select(AgentCommand).where(AgentCommand.kind == "apply_policy")).all()
        assert len(pushes) == 1 and pushes[0].server_id == sid
        loginsec.put_ssh_whitelist(s, sid, [], actor="a", now=now)
        assert policies.bundle_for(s, server).global_settings["login_security"]["ssh_whitelist"] == []
        assert [r.action for r in audit.list_records(s, action="modify_login_white_ip")[0]] == [
            "modify_login_white_ip"
        ] * 2


def test_common_lists_and_policy_validation(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        policies.ensure_presets(s)
        assert loginsec.put_common_ips(s, ["198.51.100.4", "2001:db8::/64"], actor="a", now=now) == [
            "198.51.100.4",
            "2001:db8::/64",
        ]
        with pytest.raises(Invalid, match="at most 20"):
            loginsec.put_common_ips(s, [f"198.51.100.{i}" for i in range(21)], actor="a", now=now)
        with pytest.raises(Invalid, match="'nope'"):
            loginsec.put_common_ips(s, ["nope"], actor="a", now=now)
        assert loginsec.put_common_locations(
            s, ["Germany", " germany", "Hong  Kong"], actor="a", now=now
        ) == [
            "Germany",
            "Hong Kong",
        ]
        with pytest.raises(Invalid, match="location"):
            loginsec.put_common_locations(s, ["<script>"], actor="a", now=now)
        with pytest.raises(Invalid, match="control characters"):
            loginsec.put_common_locations(s, ["Ber\x00lin"], actor="a", now=now)
        group = policies.default_group(s, "premium")
        with pytest.raises(Invalid, match="long_window_s"):
            policies.update_policy(
                s, group.id, "login_security", enabled=None, settings={"long_window_s": 10}, actor="a"
            )
        with pytest.raises(Invalid, match="lock_minutes"):
            policies.update_policy(
                s, group.id, "login_security", enabled=None, settings={"lock_minutes": 43_201}, actor="a"
            )
        basic = policies.default_group(s, "basic")
        assert "login_security" in {p.key for p in basic.policies}


def _login(user: str, address: str, at: datetime | None = None) -> dict[str, Any]:
    when = (at or datetime.now(UTC)).isoformat()
    return _record("login", user=user, address=address, service="sshd", method="password", login_time=when)


def test_abnormal_login_rule(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sid = _protected(ctx)
    now = ctx.clock.now()
    with ctx.uow() as s:
        abnormal.put_geolocation(
            s,
            "",
            [
                {"network": "198.51.100.0/24", "location": "Germany"},
                {"network": "203.0.113.0/26", "location": "France"},
                {"network": "203.0.113.64/26", "location": "Spain"},
                {"network": "203.0.113.128/26", "location": "Italy"},
                {"network": "203.0.113.192/26", "location": "Brazil"},
                {"network": "192.0.2.0/24", "location": "Japan"},
            ],
            actor="a",
            now=now,
        )
        assert abnormal.locate(s, "10.1.2.3") == "intranet"
        assert abnormal.locate(s, "198.51.100.9") == "Germany"
        assert abnormal.locate(s, "8.8.8.8") == "unknown"
    # nothing configured: no alarm
    assert _send(ctx, sid, _login("alice", "192.0.2.10")) == ["accepted"]
    with ctx.uow() as s:
        assert alarms.list_alarms(s, event_class="login_1002")[1] == 0
        loginsec.put_common_locations(s, ["Germany"], actor="a", now=now)
    # three other locations are learned, the fourth raises login_1002; intranet never does
    for address in (
        "203.0.113.1",
        "203.0.113.65",
        "203.0.113.129",
        "203.0.113.193",
        "198.51.100.1",
        "10.0.0.8",
    ):
        assert _send(ctx, sid, _login("alice", address)) == ["accepted"]
    with ctx.uow() as s:
        assert abnormal.learned_locations(s, sid) == ["France", "Spain", "Italy"]
        rows, total = alarms.list_alarms(s, event_class="login_1002")
        assert total == 1
        alarm = rows[0][0]
        assert alarm.evidence["login_ip"] == "203.0.113.193" and alarm.evidence["location"] == "Brazil"
        # common login IPs: a login from elsewhere is abnormal even from a common location
        loginsec.put_common_ips(s, ["198.51.100.0/28"], actor="a", now=now)
    assert _send(ctx, sid, _login("bob", "198.51.100.77")) == ["accepted"]
    with ctx.uow() as s:
        assert alarms.list_alarms(s, event_class="login_1002")[1] == 2
        # the login whitelist (IP + user) exempts the login
        loginsec.add_login_whitelist(
            s, ips="198.51.100.77", server_ids=[sid], username="carol", remarks="", actor="a", now=now
        )
    assert _send(ctx, sid, _login("carol", "198.51.100.77")) == ["accepted"]
    assert _send(ctx, sid, _login("dave", "198.51.100.77")) == ["accepted"]
    with ctx.uow() as s:
        users = {a.evidence["username"] for a, _ in alarms.list_alarms(s, event_class="login_1002")[0]}
        assert users == {"alice", "bob", "dave"}


def test_login_alarm_actions(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    sid = _protected(ctx)
    now = ctx.clock.now()
    _send(ctx, sid, _block("203.0.113.7/32"))
    event = AlarmEvent(
        key=new_id(),
        occurred_at=now,
        event_class="login_0001",
        fingerprint="login_0001:sshd:203.0.113.7/32",
        evidence={"login_ip": "203.0.113.7", "network": "203.0.113.7/32", "username": "root"},
    )
    other = AlarmEvent(key=new_id(), occurred_at=now, event_class="user_1001", fingerprint="u", evidence={})
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        aid = alarms.ingest(s, server, event, now).id
        uid = alarms.ingest(s, server, other, now).id
    with ctx.uow() as s:
        out, wrong = loginsec.handle_login_alarms(
            s, [aid, uid], "add_to_login_whitelist", remark="our scanner", actor="a", now=now
        )
        assert out.ok and not wrong.ok and isinstance(wrong.error, Invalid)
        alarm = s.get(Alarm, aid)
        assert alarm is not None and (alarm.status, alarm.handle_action) == (
            "handled",
            "add_to_login_whitelist",
        )
        (entry,) = loginsec.list_login_whitelist(s)
        assert (entry.networks, entry.username, entry.server_ids) == (["203.0.113.7/32"], None, [sid])
        # whitelisting does not unblock (as in the reference)
        assert loginsec.list_blocked(s, status="blocked")[1] == 1
    with ctx.uow() as s:
        (unblocked,) = loginsec.handle_login_alarms(s, [aid], "unblock", remark="", actor="a", now=now)
        assert unblocked.ok
        assert loginsec.list_blocked(s, status="unblocking")[1] == 1
        (again,) = loginsec.handle_login_alarms(s, [aid], "unblock", remark="", actor="a", now=now)
        assert not again.ok
    with ctx.uow() as s:
        (undo,) = loginsec.handle_login_alarms(
            s, [aid], "remove_from_login_whitelist", remark="", actor="a", now=now
        )
        assert undo.ok
        assert loginsec.list_login_whitelist(s) == []
        assert s.get(Alarm, aid).status == "unhandled"  # type: ignore[union-attr]
