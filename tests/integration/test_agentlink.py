"""The agent channel over real HTTPS: a real uvicorn agent app on a free port, verified against the CA.

Runs on SQLite and (where available) PostgreSQL: enrollment and identities, token limits, credential
revocation, long-poll delivery across replicas, event idempotency and per-event rejection, bad bodies.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.manager.agentlink import ingest, pki
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.models import AgentCommand, AgentCredential, EnrollmentToken, IngestedEvent
from hostward.manager.alarms.models import Alarm
from hostward.manager.app import create_agent_app, create_app
from hostward.manager.audit import service as audit
from hostward.manager.audit.models import AuditRecord
from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.policies import service as policies
from hostward.manager.regions.models import Region
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent
from tests.conftest import free_port

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def mctx(request: pytest.FixtureRequest) -> ManagerContext:
    """A migrated manager context with its PKI and policy presets, on each database backend."""
    context: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    pki.ensure_pki(context.settings)
    with context.uow() as s:
        policies.ensure_presets(s)
    return context


@dataclass
class Channel:
    url: str
    ctx: ManagerContext
    tls: ssl.SSLContext

    def client(self, key: str | None = None, timeout: float = 10) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, verify=self.tls, headers=headers, timeout=timeout)


@contextmanager
def _serving(app: Any, ctx: ManagerContext) -> Iterator[int]:
    """Serve ``app`` with a real uvicorn over TLS (the manager's certificate) on a free port."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(ctx.settings.server_cert_path),
        ssl_keyfile=str(ctx.settings.server_key_path),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        assert thread.is_alive(), "server crashed at start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def channel(mctx: ManagerContext) -> Iterator[Channel]:
    """The agent app served by a real uvicorn over TLS with the manager's certificate."""
    with _serving(create_agent_app(mctx), mctx) as port:
        tls = ssl.create_default_context(cafile=str(mctx.settings.ca_cert_path))
        yield Channel(url=f"https://localhost:{port}/agent/v1", ctx=mctx, tls=tls)


def _facts(machine_id: str = "machine-1", hostname: str = "web-1", **extra: Any) -> dict[str, Any]:
    return {
        "hostname": hostname,
        "machine_id": machine_id,
        "ips": ["10.0.0.5"],
        "os_name": "Debian GNU/Linux",
        "os_version": "12",
        "kernel": "6.1.0",
        "arch": "x86_64",
        "agent_version": "0.1.0",
        **extra,
    }


def _token(ctx: ManagerContext, **kw: Any) -> str:
    with ctx.uow() as s:
        _, raw = agentlink.create_enrollment_token(
            s, now=kw.pop("now", ctx.clock.now()), settings=ctx.settings, actor="test", **kw
        )
    return raw


def _enroll(
    ch: Channel, token: str, machine_id: str = "machine-1", name: str | None = None
) -> dict[str, Any]:
    with ch.client() as c:
        r = c.post("/enroll", json={"token": token, "name": name, "facts": _facts(machine_id)})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _alarm(key: str, fingerprint: str = "acct:mallory") -> dict[str, Any]:
    return {
        "kind": "alarm",
        "key": key,
        "occurred_at": "2024-05-01T10:00:00Z",
        "event_class": "user_1001",
        "fingerprint": fingerprint,
        "title": "new account mallory",
        "evidence": {"username": "mallory"},
    }


def _count(s: Session, model: Any, *where: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"code", "message"}
    return dict(body["error"])


# ---- CA and enrollment ------------------------------------------------------------------------------


def test_ca_endpoint_serves_the_pinned_certificate(channel: Channel) -> None:
    with channel.client() as c:
        r = c.get("/ca")
    assert r.status_code == 200
    der = ssl.PEM_cert_to_DER_cert(r.text)
    assert "sha256:" + hashlib.sha256(der).hexdigest() == pki.ca_fingerprint(channel.ctx.settings)
    # The TLS connection itself was verified against that CA (no verify=False anywhere).
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=ssl.create_default_context()) as c:
        c.get(f"{channel.url}/ca")


def test_enroll_heartbeat_and_reenroll_keep_the_server(channel: Channel) -> None:
    ctx = channel.ctx
    first = _enroll(channel, _token(ctx, region="eu-west"))
    assert first["region"] == "eu-west" and first["heartbeat_interval"] == ctx.settings.heartbeat_interval
    with ctx.uow() as s:
        server = s.get(Server, first["server_id"])
        assert server is not None
        assert (server.name, server.hostname, server.agent_status) == ("web-1", "web-1", "online")
        assert server.ips == ["10.0.0.5"] and server.os_name == "Debian GNU/Linux"
        assert 0 <= server.daily_scan_offset_s < ctx.settings.scan_window_hours * 3600
        assert s.get(Region, "eu-west") is not None
        assert _count(s, AuditRecord, AuditRecord.action == "enroll_server") == 1

    health = {"cpu_percent": 0.4, "rss_bytes": 30_000_000, "degraded": False}
    with channel.client(first["agent_key"]) as c:
        r = c.post(
            "/heartbeat", json={"facts": _facts(kernel="6.2.0"), "health": health, "policy_version": 7}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["commands_pending"] is False
        bundle = c.get("/policy").json()
        assert body["policy_version"] == bundle["version"] and bundle["protection"] is False
    with ctx.uow() as s:
        server = s.get(Server, first["server_id"])
        assert server is not None
        assert server.kernel == "6.2.0" and server.health["rss_bytes"] == 30_000_000
        assert server.policy_version_applied == 7

    # Re-installed agent on the same machine (another token even): same record, new key, old key dead.
    again = _enroll(channel, _token(ctx))
    assert again["server_id"] == first["server_id"] and again["agent_key"] != first["agent_key"]
    assert again["region"] == "eu-west"
    with channel.client(first["agent_key"]) as c:
        _error(c.post("/heartbeat", json={"facts": _facts()}), 401)
    with channel.client(again["agent_key"]) as c:
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
    with ctx.uow() as s:
        creds = agentlink.list_credentials(s, first["server_id"])
        assert [c.revoked_at is None for c in creds] == [True, False]
        assert all(c.key_prefix.startswith("hwa_") and len(c.key_prefix) == 12 for c in creds)
        assert _count(s, Server) == 1
        assert _count(s, AuditRecord, AuditRecord.action == "reenroll_server") == 1


def test_identity_is_machine_id_plus_name(channel: Channel) -> None:
    token = _token(channel.ctx)
    a = _enroll(channel, token, "machine-1")
    clone = _enroll(channel, token, "machine-2")  # a clone with a regenerated machine id
    named_1 = _enroll(channel, token, "machine-1", name="sim-1")
    named_2 = _enroll(channel, token, "machine-1", name="sim-2")
    named_1_again = _enroll(channel, token, "machine-1", name="sim-1")
    ids = [a["server_id"], clone["server_id"], named_1["server_id"], named_2["server_id"]]
    assert len(set(ids)) == 4
    assert named_1_again["server_id"] == named_1["server_id"]
    with channel.ctx.uow() as s:
        named = s.get(Server, named_2["server_id"])
        assert named is not None and (named.name, named.agent_name) == ("sim-2", "sim-2")


def test_token_limits_expiry_and_revocation(channel: Channel) -> None:
    ctx = channel.ctx
    now = ctx.clock.now()
    once = _token(ctx, max_uses=1)
    expired = _token(ctx, hours=1, now=now - timedelta(hours=2))
    revoked = _token(ctx)
    with ctx.uow() as s:
        row = s.scalar(
            select(EnrollmentToken).where(EnrollmentToken.token_hash == agentlink.sha256_hex(revoked))
        )
        assert row is not None
        agentlink.revoke_enrollment_token(s, row.id, now=now, actor="test")

    _enroll(channel, once, "m-a")
    with channel.client() as c:
        cases = [
            (once, "m-b", "already used 1 time"),
            (expired, "m-c", "expired"),
            (revoked, "m-d", "revoked"),
            ("hwe_not-a-real-token", "m-e", "unknown enrollment token"),
        ]
        for token, machine, message in cases:
            r = c.post("/enroll", json={"token": token, "facts": _facts(machine)})
            assert message in _error(r, 401)["message"]
    with ctx.uow() as s:
        assert _count(s, Server) == 1  # the refused enrollments stored nothing
        uses = s.scalar(select(EnrollmentToken.uses).where(EnrollmentToken.max_uses == 1))
        assert uses == 1


def test_unlimited_token_counts_uses(channel: Channel) -> None:
    token = _token(channel.ctx)
    for i in range(3):
        _enroll(channel, token, f"m-{i}")
    with channel.ctx.uow() as s:
        assert s.scalar(select(EnrollmentToken.uses)) == 3


def test_revoked_or_unknown_credential_gets_401_and_stores_nothing(channel: Channel) -> None:
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    with ctx.uow() as s:
        seen_before = s.get(Server, sid).last_seen_at  # type: ignore[union-attr]
        cred = s.scalar(select(AgentCredential).where(AgentCredential.server_id == sid))
        assert cred is not None
        agentlink.revoke_credential(s, sid, cred.id, now=ctx.clock.now(), actor="test")

    for key in (enrolled["agent_key"], "hwa_unknown", None):
        with channel.client(key) as c:
            _error(c.post("/events", json={"events": [_alarm("k1")]}), 401)
            _error(c.post("/heartbeat", json={"facts": _facts(hostname="evil")}), 401)
            _error(c.get("/commands"), 401)
            _error(c.get("/policy"), 401)
    with ctx.uow() as s:
        assert _count(s, Alarm) == 0 and _count(s, IngestedEvent) == 0
        server = s.get(Server, sid)
        assert server is not None and server.hostname == "web-1" and server.last_seen_at == seen_before


# ---- commands ---------------------------------------------------------------------------------------


def _poll_in_thread(ch: Channel, key: str, wait: float) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        with ch.client(key, timeout=wait + 10) as c:
            r = c.get("/commands", params={"wait": wait})
        out["at"] = time.monotonic()
        out["response"] = r

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _wait_until_polling(ctx: ManagerContext, server_id: str) -> None:
    deadline = time.monotonic() + 5
    while server_id not in ctx.wakeups.waiting_servers():
        assert time.monotonic() < deadline, "the poll never started waiting"
        time.sleep(0.01)


def test_long_poll_gets_a_command_from_another_replica_within_2s(channel: Channel) -> None:
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    thread, out = _poll_in_thread(channel, enrolled["agent_key"], wait=20)
    _wait_until_polling(ctx, sid)
    time.sleep(0.3)

    # Another replica: its own engine and wake-ups, so only the database connects the two.
    other = ManagerContext.from_settings(ctx.settings)
    try:
        with other.uow() as s:
            queued = agentlink.queue_command(
                s, sid, "scan", {"scan_id": "s1", "kind": "full"}, other.clock.now()
            )
        committed = time.monotonic()
    finally:
        other.close()
    thread.join(10)
    r = out["response"]
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["commands"]] == [queued.id]
    assert out["at"] - committed < 2.0

    with channel.client(enrolled["agent_key"]) as c:
        r = c.post(f"/commands/{queued.id}/result", json={"status": "succeeded", "detail": "done"})
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
        # Delivered once: a second poll finds nothing.
        assert c.get("/commands").json() == {"commands": []}
        # A foreign or unknown command id is a 404 envelope.
        _error(c.post("/commands/nope/result", json={"status": "failed"}), 404)
    with ctx.uow() as s:
        row = s.get(AgentCommand, queued.id)
        assert row is not None and (row.status, row.detail) == ("succeeded", "done")


def test_long_poll_same_replica_wakes_at_commit_and_returns_queued_at_once(channel: Channel) -> None:
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    thread, out = _poll_in_thread(channel, enrolled["agent_key"], wait=20)
    _wait_until_polling(ctx, sid)
    with ctx.uow() as s:
        agentlink.queue_command(s, sid, "apply_policy", {}, ctx.clock.now())
    committed = time.monotonic()
    thread.join(10)
    assert len(out["response"].json()["commands"]) == 1
    assert out["at"] - committed < 1.0

    with ctx.uow() as s:
        agentlink.queue_command(s, sid, "scan", {"n": 1}, ctx.clock.now())
        agentlink.queue_command(s, sid, "scan", {"n": 2}, ctx.clock.now())
        # Expired before the agent looked: never delivered.
        agentlink.queue_command(
            s, sid, "scan", {"n": 3}, ctx.clock.now() - timedelta(minutes=10), ttl=timedelta(minutes=1)
        )
    with channel.client(enrolled["agent_key"]) as c:
        started = time.monotonic()
        hb = c.post("/heartbeat", json={"facts": _facts()}).json()
        assert hb["commands_pending"] is True
        r = c.get("/commands", params={"wait": 20})
        assert time.monotonic() - started < 1.0
        assert sorted(cmd["payload"]["n"] for cmd in r.json()["commands"]) == [1, 2]
        # Nothing queued: the poll is held no longer than asked.
        started = time.monotonic()
        assert c.get("/commands", params={"wait": 1}).json() == {"commands": []}
        assert 0.9 < time.monotonic() - started < 3
    with ctx.uow() as s:
        assert _count(s, AgentCommand, AgentCommand.status == "expired") == 1


def test_concurrent_claims_never_deliver_a_command_twice(mctx: ManagerContext) -> None:
    with mctx.uow() as s:
        from tests.fakes.servers import enrolled_server

        sid = enrolled_server(s, mctx.clock.now()).id
        for i in range(40):
            agentlink.queue_command(s, sid, "scan", {"n": i}, mctx.clock.now())
    got: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        with mctx.uow() as s:
            got.append([c.id for c in agentlink.claim_commands(s, sid, mctx.clock.now(), limit=15)])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [i for batch in got for i in batch]
    assert len(ids) == len(set(ids)) == 40


# ---- events -----------------------------------------------------------------------------------------


def test_events_are_idempotent(channel: Channel) -> None:
    enrolled = _enroll(channel, _token(channel.ctx))
    batch = {"events": [_alarm("evt-1"), _alarm("evt-2", "acct:eve")]}
    with channel.client(enrolled["agent_key"]) as c:
        first = c.post("/events", json=batch).json()["acks"]
        again = c.post("/events", json=batch).json()["acks"]
        same_batch_twice = c.post("/events", json={"events": [_alarm("evt-3", "x"), _alarm("evt-3", "x")]})
    assert [a["status"] for a in first] == ["accepted", "accepted"]
    assert [(a["key"], a["status"]) for a in again] == [("evt-1", "duplicate"), ("evt-2", "duplicate")]
    assert [a["status"] for a in same_batch_twice.json()["acks"]] == ["accepted", "duplicate"]
    with channel.ctx.uow() as s:
        alarms = s.scalars(select(Alarm).order_by(Alarm.fingerprint)).all()
        assert [(a.fingerprint, a.count) for a in alarms] == [("acct:eve", 1), ("acct:mallory", 1), ("x", 1)]


def test_one_bad_event_is_rejected_and_the_rest_accepted(
    channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:

    def good(session: Session, server: Server, event: RecordEvent, now: Any) -> None:
        audit.record(session, "agent", "test_record", target_id=event.key, **event.data)

    def refuses(session: Session, server: Server, event: RecordEvent, now: Any) -> None:
        # Writes first, then refuses: the write must be rolled back with the event (savepoint).
        server.labels = ["should-not-stick"]
        session.flush()
        raise Invalid("port must be 1-65535")

    monkeypatch.setitem(ingest.RECORD_HANDLERS, "test_good", good)
    monkeypatch.setitem(ingest.RECORD_HANDLERS, "test_refuses", refuses)
    enrolled = _enroll(channel, _token(channel.ctx))

    def record(key: str, topic: str) -> dict[str, Any]:
        return {
            "kind": "record",
            "key": key,
            "occurred_at": "2024-05-01T10:00:00Z",
            "topic": topic,
            "data": {"k": key},
        }

    events = [
        _alarm("a-1"),
        {"kind": "alarm", "key": "bad-1", "occurred_at": "yesterday"},  # malformed
        record("r-1", "test_good"),
        record("r-2", "no_such_topic"),
        record("r-3", "test_refuses"),
        {**_alarm("a-2"), "event_class": "nope_9999"},  # valid shape, refused by the alarm service
        _alarm("a-3", "acct:trudy"),
    ]
    with channel.client(enrolled["agent_key"]) as c:
        r = c.post("/events", json={"events": events})
    assert r.status_code == 200, r.text
    acks = r.json()["acks"]
    status = {a["key"]: (a["status"], a["reason"]) for a in acks}
    assert [a["key"] for a in acks] == ["a-1", "bad-1", "r-1", "r-2", "r-3", "a-2", "a-3"]
    assert status["a-1"][0] == status["r-1"][0] == status["a-3"][0] == "accepted"
    assert status["bad-1"][0] == "rejected" and "occurred_at" in status["bad-1"][1]
    assert status["r-2"] == ("rejected", "unknown record topic 'no_such_topic'")
    assert status["r-3"] == ("rejected", "port must be 1-65535")
    assert status["a-2"][0] == "rejected" and "nope_9999" in status["a-2"][1]
    with channel.ctx.uow() as s:
        assert _count(s, Alarm) == 2
        # The batch was first tried whole (and undone), then event by event: each effect once.
        records = s.scalars(select(AuditRecord).where(AuditRecord.action == "test_record")).all()
        assert [(r.target_id, r.detail) for r in records] == [("r-1", {"k": "r-1"})]
        keys = set(s.scalars(select(IngestedEvent.key)))
        assert keys == {"a-1", "r-1", "a-3"}  # a rejected event may be sent again
        server = s.get(Server, enrolled["server_id"])
        assert server is not None and server.labels == []


# ---- bad bodies -------------------------------------------------------------------------------------


def test_oversized_body_gets_413_envelope(channel: Channel) -> None:
    enrolled = _enroll(channel, _token(channel.ctx))
    big = b'{"events": [' + b" " * (9 * 1024 * 1024) + b"]}"
    with channel.client(enrolled["agent_key"], timeout=30) as c:
        err = _error(c.post("/events", content=big, headers={"content-type": "application/json"}), 413)
        assert err["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
            yield b'{"events": ['
            for _ in range(9):
                yield b" " * (1024 * 1024)
            yield b"]}"

        err = _error(c.post("/events", content=chunks(), headers={"content-type": "application/json"}), 413)
        assert err["code"] == "payload_too_large"
        # The channel still works afterwards.
        assert c.post("/events", json={"events": []}).json() == {"acks": []}
    with channel.ctx.uow() as s:
        assert _count(s, IngestedEvent) == 0


def test_garbage_bodies_get_4xx_envelopes(channel: Channel) -> None:
    enrolled = _enroll(channel, _token(channel.ctx))
    with channel.client(enrolled["agent_key"]) as c:
        for path in ("/events", "/heartbeat", "/enroll", "/commands/x/result"):
            r = c.post(path, content=b"{not json", headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, r.status_code)
            assert r.json()["error"]["code"]
        _error(c.post("/events", json={"events": [{}] * 501}), 422)
        _error(c.post("/heartbeat", json={"facts": {"hostname": "x"}}), 422)
        _error(c.get("/commands", params={"wait": "soon"}), 422)
    with channel.client() as c:
        _error(c.post("/enroll", json={"token": "short", "facts": _facts()}), 422)


# ---- status sweep -----------------------------------------------------------------------------------


def test_offline_sweep_and_recovery(channel: Channel) -> None:
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    later = ctx.clock.now() + timedelta(seconds=ctx.settings.offline_after_s + 1)
    with ctx.uow() as s:
        assert agentlink.sweep_agent_status(s, ctx.clock.now(), ctx.settings) == 0
        assert agentlink.sweep_agent_status(s, later, ctx.settings) == 1
    with ctx.uow() as s:
        assert s.get(Server, enrolled["server_id"]).agent_status == "offline"  # type: ignore[union-attr]
        assert agentlink.sweep_agent_status(s, later, ctx.settings) == 0
    with channel.client(enrolled["agent_key"]) as c:
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
    with ctx.uow() as s:
        assert s.get(Server, enrolled["server_id"]).agent_status == "online"  # type: ignore[union-attr]


# ---- REST API for operators -------------------------------------------------------------------------


@pytest.fixture
def api(mctx: ManagerContext) -> Iterator[httpx.Client]:
    """The console/API app on a real uvicorn, with an operator and a read-only user."""
    with mctx.uow() as s:
        auth.create_user(s, "op", PASSWORD, "operator", actor="test")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="test")
    app = create_app(mctx.settings, mctx, run_background=False)
    tls = ssl.create_default_context(cafile=str(mctx.settings.ca_cert_path))
    with (
        _serving(app, mctx) as port,
        httpx.Client(base_url=f"https://localhost:{port}", verify=tls) as client,
    ):
        yield client


def _login(client: httpx.Client, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_enrollment_token_api_and_credentials(api: httpx.Client, channel: Channel) -> None:
    op, viewer = _login(api, "op"), _login(api, "viewer")
    r = api.post("/api/v1/enrollment-tokens", headers=op, json={"region": "lab", "max_uses": 2, "name": "n1"})
    assert r.status_code == 201, r.text
    created = r.json()
    fingerprint = pki.ca_fingerprint(channel.ctx.settings)
    assert created["ca_fingerprint"] == fingerprint and created["region"] == "lab"
    assert created["agent_url"] == channel.ctx.settings.effective_agent_url
    assert created["max_uses"] == 2 and created["uses"] == 0 and created["status"] == "active"
    assert created["install_command"] == (
        f"hostward agent enroll --manager {created['agent_url']} --token {created['token']} "
        f"--ca-fingerprint {fingerprint} --state-dir /var/lib/hostward-agent --name n1 && "
        "hostward agent run --state-dir /var/lib/hostward-agent"
    )
    _error(api.post("/api/v1/enrollment-tokens", headers=viewer, json={}), 403)
    _error(api.post("/api/v1/enrollment-tokens", headers=op, json={"hours": 0}), 422)

    enrolled = _enroll(channel, created["token"])
    listed = api.get("/api/v1/enrollment-tokens", headers=viewer).json()
    assert [(t["id"], t["uses"], t["token"], t["install_command"]) for t in listed] == [
        (created["id"], 1, None, None)
    ]

    assert api.delete(f"/api/v1/enrollment-tokens/{created['id']}", headers=op).status_code == 204
    assert api.get("/api/v1/enrollment-tokens", headers=op).json()[0]["status"] == "revoked"
    _error(api.delete("/api/v1/enrollment-tokens/nope", headers=op), 404)

    sid = enrolled["server_id"]
    creds = api.get(f"/api/v1/servers/{sid}/credentials", headers=viewer).json()
    assert len(creds) == 1 and creds[0]["status"] == "active"
    assert enrolled["agent_key"].startswith(creds[0]["key_prefix"])
    path = f"/api/v1/servers/{sid}/credentials/{creds[0]['id']}/revoke"
    _error(api.post(path, headers=viewer), 403)
    r = api.post(path, headers=op)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    with channel.client(enrolled["agent_key"]) as c:
        _error(c.post("/heartbeat", json={"facts": _facts()}), 401)
    with channel.ctx.uow() as s:
        actions = set(s.scalars(select(AuditRecord.action).where(AuditRecord.actor == "op")))
        assert {"create_enrollment_token", "revoke_enrollment_token", "revoke_agent_credential"} <= actions


def test_install_command_quotes_values() -> None:
    cmd = agentlink.build_install_command("https://m:10180", "tok", "sha256:ab", name="a b;rm -rf /")
    assert "--name 'a b;rm -rf /'" in cmd
    assert cmd.endswith("&& hostward agent run --state-dir /var/lib/hostward-agent")


def test_record_handler_registry_rejects_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "RECORD_HANDLERS", {})

    @ingest.register("topic_a")
    def first(session: Session, server: Server, event: RecordEvent, now: Any) -> None:
        return None

    with pytest.raises(ValueError, match="already has a handler"):

        @ingest.register("topic_a")
        def second(session: Session, server: Server, event: RecordEvent, now: Any) -> None:
            return None

    assert list(ingest.RECORD_HANDLERS.items()) == [("topic_a", first)]


def test_ca_missing_path_is_reported(tmp_path: Path) -> None:
    from hostward.core.errors import ConfigError
    from hostward.manager.settings import ManagerSettings

    with pytest.raises(ConfigError, match="manager init"):
        pki.ca_fingerprint(ManagerSettings(data_dir=tmp_path))
