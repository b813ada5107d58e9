"""Quota binding and protection rules (SPEC §3) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from hostward.core.errors import HostwardError
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.quotas.models import Quota
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings
from tests.fakes.servers import enrolled_server


def _setup(ctx: ManagerContext) -> None:
    with ctx.uow() as s:
        policies.ensure_presets(s)


def _add(ctx: ManagerContext, edition: str, count: int, **kw: object) -> list[str]:
    with ctx.uow() as s:
        qs = quotas.add_quotas(
            s,
            edition,
            count,
            expires_at=kw.get("expires_at"),  # type: ignore[arg-type]
            region=kw.get("region"),
            now=ctx.clock.now(),
            settings=ctx.settings,  # type: ignore[arg-type]
            actor="test",
        )
        return [q.id for q in qs]


def _enable(ctx: ManagerContext, sid: str, edition: str, **kw: object) -> str:
    with ctx.uow() as s:
        return protection.enable_one(
            s, sid, edition, ctx.clock.now(), ctx.settings, actor="test", trigger_scan=False, **kw
        )  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def any_ctx(request: pytest.FixtureRequest) -> ManagerContext:
    name = "ctx" if request.param == "sqlite" else "pg_ctx"
    context: ManagerContext = request.getfixturevalue(name)
    _setup(context)
    return context


def test_enable_binds_quota_and_second_server_is_refused(any_ctx: ManagerContext) -> None:
    ctx = any_ctx
    (qid,) = _add(ctx, "premium", 1)
    with ctx.uow() as s:
        a = enrolled_server(s, ctx.clock.now(), name="a").id
        b = enrolled_server(s, ctx.clock.now(), name="b").id
    assert _enable(ctx, a, "premium") == qid
    with ctx.uow() as s:
        server = s.get(Server, a)
        assert server is not None
        assert server.protection_status == "opened"
        assert server.edition == "premium"
        assert server.policy_group_id == policies.default_group(s, "premium").id
        assert s.get(Quota, qid).server_id == a  # type: ignore[union-attr]
    with pytest.raises(protection.NoQuota, match="no idle premium quota"):
        _enable(ctx, b, "premium")
    with ctx.uow() as s:
        protection.disable_one(s, a, ctx.clock.now(), ctx.settings, actor="test")
    with ctx.uow() as s:
        assert s.get(Quota, qid).server_id is None  # type: ignore[union-attr]
        assert s.get(Server, a).protection_status == "closed"  # type: ignore[union-attr]
    assert _enable(ctx, b, "premium") == qid


def test_bind_requires_online_agent_and_same_region(ctx: ManagerContext) -> None:
    _setup(ctx)
    _add(ctx, "enterprise", 1, region="eu-1")
    with ctx.uow() as s:
        offline = enrolled_server(s, ctx.clock.now(), online=False).id
        other_region = enrolled_server(s, ctx.clock.now(), region="us-1").id
        in_region = enrolled_server(s, ctx.clock.now(), region="eu-1").id
    with pytest.raises(protection.AgentNotOnline):
        _enable(ctx, offline, "enterprise")
    with pytest.raises(protection.NoQuota, match="region us-1"):
        _enable(ctx, other_region, "enterprise")
    assert _enable(ctx, in_region, "enterprise")
    with pytest.raises(HostwardError, match="already protected"):
        _enable(ctx, in_region, "enterprise")


def test_switch_edition_frees_old_quota(ctx: ManagerContext) -> None:
    _setup(ctx)
    (ent,) = _add(ctx, "enterprise", 1)
    (prem,) = _add(ctx, "premium", 1)
    with ctx.uow() as s:
        sid = enrolled_server(s, ctx.clock.now()).id
    _enable(ctx, sid, "enterprise")
    with ctx.uow() as s:
        assert (
            protection.switch_edition_one(s, sid, "premium", ctx.clock.now(), ctx.settings, actor="t") == prem
        )
    with ctx.uow() as s:
        assert s.get(Quota, ent).server_id is None  # type: ignore[union-attr]
        assert s.get(Server, sid).edition == "premium"  # type: ignore[union-attr]
    # No idle enterprise quota left after binding it elsewhere -> switching back fails, nothing changes.
    with ctx.uow() as s:
        other = enrolled_server(s, ctx.clock.now()).id
    _enable(ctx, other, "enterprise")
    with pytest.raises(protection.NoQuota), ctx.uow() as s:
        protection.switch_edition_one(s, sid, "enterprise", ctx.clock.now(), ctx.settings, actor="t")
    with ctx.uow() as s:
        assert s.get(Quota, prem).server_id == sid  # type: ignore[union-attr]


def test_expired_quota_protects_during_grace_then_frozen_turns_protection_off(ctx: ManagerContext) -> None:
    _setup(ctx)
    now = ctx.clock.now()
    (qid,) = _add(ctx, "premium", 1, expires_at=now + timedelta(days=1))
    with ctx.uow() as s:
        sid = enrolled_server(s, now).id
    _enable(ctx, sid, "premium")
    later = now + timedelta(days=2)
    with ctx.uow() as s:
        s.get(Server, sid).last_seen_at = later  # type: ignore[union-attr]
        assert quotas.refresh_quota_statuses(s, later, 15, ctx.settings) == 1
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert s.get(Quota, qid).status == "expired"  # type: ignore[union-attr]
        assert server.protection_status == "opened"  # type: ignore[union-attr]
        assert "grace" in server.protection_reason or "continues" in server.protection_reason  # type: ignore[union-attr]
    much_later = now + timedelta(days=20)
    with ctx.uow() as s:
        s.get(Server, sid).last_seen_at = much_later  # type: ignore[union-attr]
        quotas.refresh_quota_statuses(s, much_later, 15, ctx.settings)
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server.protection_status == "closed"  # type: ignore[union-attr]
        assert "frozen" in server.protection_reason  # type: ignore[union-attr]


def test_offline_agent_is_protection_interrupted_and_recovers(ctx: ManagerContext) -> None:
    _setup(ctx)
    _add(ctx, "basic", 1)
    now = ctx.clock.now()
    with ctx.uow() as s:
        sid = enrolled_server(s, now).id
    _enable(ctx, sid, "basic")
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        protection.refresh_status(s, server, now + timedelta(seconds=31), ctx.settings)
        assert (server.agent_status, server.protection_status) == ("offline", "protection_exception")
        server.last_seen_at = now + timedelta(seconds=40)
        protection.refresh_status(s, server, now + timedelta(seconds=41), ctx.settings)
        assert (server.agent_status, server.protection_status) == ("online", "opened")


def test_delete_server_frees_quota_and_auto_bind(ctx: ManagerContext) -> None:
    _setup(ctx)
    (qid,) = _add(ctx, "enterprise", 1)
    with ctx.uow() as s:
        sid = enrolled_server(s, ctx.clock.now()).id
    _enable(ctx, sid, "enterprise")
    with ctx.uow() as s:
        servers.delete_server(s, sid, actor="t")
    with ctx.uow() as s:
        assert s.get(Quota, qid).server_id is None  # type: ignore[union-attr]
        global_settings.put(s, "auto_bind", {"enabled": True, "edition": None}, ctx.clock.now())
    with ctx.uow() as s:
        server = enrolled_server(s, ctx.clock.now())
        protection.on_enrolled(s, server, ctx.clock.now(), ctx.settings, "agent")
        sid2 = server.id
    with ctx.uow() as s:
        assert s.get(Quota, qid).server_id == sid2  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_enables_bind_exactly_the_idle_quotas(
    backend: str, request: pytest.FixtureRequest
) -> None:
    ctx: ManagerContext = request.getfixturevalue("ctx" if backend == "sqlite" else "pg_ctx")
    _setup(ctx)
    _add(ctx, "premium", 10)
    with ctx.uow() as s:
        ids = [enrolled_server(s, ctx.clock.now()).id for _ in range(50)]
    results: list[bool] = []
    errors: list[str] = []
    barrier = threading.Barrier(len(ids))
    lock = threading.Lock()

    def worker(sid: str) -> None:
        barrier.wait()
        try:
            _enable(ctx, sid, "premium")
            ok = True
        except HostwardError as exc:
            ok = False
            with lock:
                errors.append(exc.code)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=worker, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 10
    assert results.count(False) == 40
    assert set(errors) == {"no_idle_quota"}
    with ctx.uow() as s:
        used = s.scalar(select(func.count()).where(Quota.server_id.is_not(None)))
        protected = s.scalar(select(func.count()).where(Server.edition == "premium"))
    assert used == protected == 10
