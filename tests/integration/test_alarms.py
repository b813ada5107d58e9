"""Alarm ingest, merging, whitelist at ingest and retroactively, handling with undo, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hostward.core.errors import Invalid
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.context import ManagerContext
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent
from tests.fakes.servers import enrolled_server


def _event(
    key: str, user: str = "eve", uid: int = 1001, cls: str = "user_1001", **evidence: object
) -> AlarmEvent:
    from hostward.core.clock import utcnow

    return AlarmEvent(
        key=key,
        occurred_at=utcnow(),
        event_class=cls,
        fingerprint=f"{cls}:{user}:{uid}",
        title=f"account {user} added",
        evidence={"username": user, "uid": uid, **evidence},
    )


def test_repeats_merge_and_handled_alarms_reopen_as_new(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now)
        a1 = alarms.ingest(s, server, _event("k1"), now)
        a2 = alarms.ingest(s, server, _event("k2"), now + timedelta(seconds=5))
        assert a1.id == a2.id
        assert a2.count == 2
        assert server.risk_intrusions == 1
        assert server.scan_result == "risk"
        sid, aid = server.id, a1.id
    with ctx.uow() as s:
        (out,) = alarms.handle(s, [aid], "mark_as_handled", remark="known", actor="alice", now=now)
        assert out.ok
        server = s.get(Server, sid)
        assert server is not None
        assert server.risk_intrusions == 0
        assert server.scan_result == "clean"
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        a3 = alarms.ingest(s, server, _event("k3"), now)
        assert a3.id != aid
    with ctx.uow() as s:
        records, _ = audit.list_records(s, action="alarm_mark_as_handled")
        assert records[0].actor == "alice" and records[0].remark == "known"


def test_undo_actions_must_match(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now)
        aid = alarms.ingest(s, server, _event("k1"), now).id
    with ctx.uow() as s:
        assert alarms.handle(s, [aid], "ignore", remark="", actor="a", now=now)[0].ok
        bad = alarms.handle(s, [aid], "unhandle", remark="", actor="a", now=now)[0]
        assert not bad.ok and bad.error is not None and bad.error.code == "conflict"
        assert alarms.handle(s, [aid], "do_not_ignore", remark="", actor="a", now=now)[0].ok
        assert s.get(Alarm, aid).status == "unhandled"  # type: ignore[union-attr]
    with ctx.uow() as s:
        missing = alarms.handle(s, [aid, "nope"], "mark_as_handled", remark="", actor="a", now=now)
        assert [o.ok for o in missing] == [True, False]


def test_whitelist_at_ingest_and_retroactive(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now)
        other = enrolled_server(s, now)
        open_alarm = alarms.ingest(s, server, _event("k0", user="deploy"), now)
        rule = alarms.create_rule(
            s,
            event_class="user_1001",
            field="username",
            judge="glob",
            value="dep*",
            server_ids=[server.id],
            expires_at=None,
            description="",
            actor="a",
            now=now,
        )
        quiet = alarms.ingest(s, server, _event("k1", user="deploy2", uid=1002), now)
        assert quiet.status == "handled" and quiet.handle_action == "whitelisted"
        loud = alarms.ingest(s, other, _event("k2", user="deploy3", uid=1003), now)
        assert loud.status == "unhandled"
        assert alarms.apply_rule(s, rule.id, actor="a", now=now) == 1
        assert open_alarm.status == "handled"
        assert rule.hits == 2


def test_add_to_alarm_whitelist_from_alarm_and_undo(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now)
        aid = alarms.ingest(s, server, _event("k1", user="bob", uid=0, cls="user_1002"), now).id
    with ctx.uow() as s:
        (out,) = alarms.handle(
            s, [aid], "add_to_alarm_whitelist", remark="", actor="a", now=now, whitelist={"field": "username"}
        )
        assert out.ok
        assert len(alarms.list_rules(s)) == 1
        server = s.get(Server, s.get(Alarm, aid).server_id)  # type: ignore[union-attr]
        again = alarms.ingest(s, server, _event("k2", user="bob", uid=0, cls="user_1002"), now)  # type: ignore[arg-type]
        assert again.handle_action == "whitelisted"
    with ctx.uow() as s:
        assert alarms.handle(s, [aid], "remove_from_alarm_whitelist", remark="", actor="a", now=now)[0].ok
        assert alarms.list_rules(s) == []


def test_unknown_class_is_rejected_and_retention_purges(ctx: ManagerContext) -> None:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = enrolled_server(s, now)
        with pytest.raises(Invalid):
            alarms.ingest(s, server, _event("k", cls="nope_0001"), now)
        old = alarms.ingest(s, server, _event("k1"), now - timedelta(days=31))
        old.last_seen = now - timedelta(days=31)
        alarms.ingest(s, server, _event("k2", user="x", uid=5), now)
        s.flush()
        assert alarms.purge_old(s, now, 30) == 1
        _rows, total = alarms.list_alarms(s)
        assert total == 1
