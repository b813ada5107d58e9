"""Alarm notifications with real receivers: e-mail to a real local SMTP server (aiosmtpd) and a JSON
webhook to a real local HTTP server (HMAC-SHA256 signature checked, failures retried with backoff by the
scheduler's job queue); real-time notices queued with the events' own transaction (severities and
masked classes honoured, auto-blocking actions included), the daily summary at its time; the settings
API (secrets write-only) and the console page."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from hostward.core.ids import new_id
from hostward.manager.agentlink import ingest
from hostward.manager.app import create_app
from hostward.manager.auth import service as auth
from hostward.manager.context import ManagerContext
from hostward.manager.loginsec.models import BlockedIp
from hostward.manager.notify import service as notify
from hostward.manager.notify import settings as ns
from hostward.manager.notify.realtime import install
from hostward.manager.policies import service as policies
from hostward.manager.scheduler import builtin
from hostward.manager.scheduler.models import Job
from hostward.manager.scheduler.registry import Registry
from hostward.manager.scheduler.runner import Scheduler
from hostward.manager.servers.models import Server
from hostward.wire import AlarmEvent, RawEventBatch
from tests.conftest import free_port
from tests.fakes.servers import enrolled_server

NOW = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
SECRET = "s3cr3t-signing-key"


class Inbox:
    """aiosmtpd handler keeping every message received."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content, policy=policy.default),
            )
        )
        self.received.set()
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Hook:
    """A real HTTP server recording webhook requests; answers ``statuses`` in turn, then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def nctx(request: pytest.FixtureRequest) -> ManagerContext:
    ctx: ManagerContext = request.getfixturevalue("ctx" if request.param == "sqlite" else "pg_ctx")
    with ctx.uow() as s:
        policies.ensure_presets(s)
    ingest.load_builtin_handlers()
    install(ctx.sessions)
    return ctx


def configure(ctx: ManagerContext, **changes: Any) -> None:
    with ctx.uow() as s:
        data = ns.load(s).model_dump()
        for key, value in changes.items():
            if isinstance(value, dict):
                data[key].update(value)
            else:
                data[key] = value
        ns.save(s, ns.NotificationUpdate.model_validate(data), NOW)


def scheduler(ctx: ManagerContext) -> Scheduler:
    registry = Registry()
    registry.add_job("notify_send", builtin.notify_send, max_attempts=4)
    return Scheduler(ctx, registry, retry_base_s=10, retry_max_s=60)


def raise_alarm(
    ctx: ManagerContext, sid: str, severity: str, event_class: str = "login_0002", n: int = 1
) -> None:
    event = AlarmEvent(
        key=new_id(),
        occurred_at=NOW,
        event_class=event_class,
        severity=severity,  # type: ignore[arg-type]
        title=f"Brute force succeeded from 203.0.113.{n}",
        fingerprint=f"fp-{n}",
        evidence={"login_ip": f"203.0.113.{n}", "username": "root"},
    )
    with ctx.uow() as s:
        server = s.get(Server, sid)
        assert server is not None
        batch = RawEventBatch(events=[json.loads(event.model_dump_json())])
        assert ingest.ingest_batch(s, server, batch, NOW)[0].status == "accepted"


def soon() -> datetime:
    """Jobs are queued at the real current time; run the scheduler just after it."""
    return datetime.now(UTC) + timedelta(seconds=1)


def jobs_of(ctx: ManagerContext) -> list[Job]:
    with ctx.uow() as s:
        rows = list(s.scalars(select(Job).where(Job.kind == "notify_send").order_by(Job.created_at)))
        s.expunge_all()
        return rows


def test_realtime_alarm_email_to_a_real_smtp_server(nctx: ManagerContext, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    with nctx.uow() as s:
        sid = enrolled_server(s, NOW, name="db-01").id
    configure(
        nctx,
        severities=["critical", "high"],
        masked_event_classes=["login_0001"],
        email={
            "enabled": True,
            "host": "127.0.0.1",
            "port": port,
            "sender": "hostward@example.org",
            "recipients": ["ops@example.org", "sec@example.org"],
        },
    )
    raise_alarm(nctx, sid, "high", n=1)
    raise_alarm(nctx, sid, "high", n=1)  # a repeat merges into the open alarm: no second notice
    raise_alarm(nctx, sid, "low", n=2)  # severity not chosen
    raise_alarm(nctx, sid, "high", "login_0001", n=3)  # masked class
    queued = jobs_of(nctx)
    assert [j.payload["channel"] for j in queued] == ["email"]
    assert scheduler(nctx).run_once(soon()) == 1
    assert inbox.received.wait(5)
    sender, rcpts, msg = inbox.messages[0]
    assert (sender, sorted(rcpts)) == ("hostward@example.org", ["ops@example.org", "sec@example.org"])
    assert msg["Subject"].strip() == "[hostward] High alarm on db-01: Brute force succeeded from 203.0.113.1"
    body = msg.get_content()  # type: ignore[attr-defined]
    assert isinstance(body, str) and "Server: db-01" in body and "(login_0002)" in body
    assert jobs_of(nctx)[0].status == "done"


def test_webhook_signed_and_retried_with_backoff(nctx: ManagerContext, hook: Hook) -> None:
    with nctx.uow() as s:
        sid = enrolled_server(s, NOW, name="web-01").id
    configure(nctx, webhook={"enabled": True, "url": hook.url, "secret": SECRET})
    hook.statuses = [500, 503]
    raise_alarm(nctx, sid, "critical")
    runner = scheduler(nctx)
    t = soon()
    runner.run_once(t)
    job = jobs_of(nctx)[0]
    assert (job.status, job.attempts) == ("pending", 1) and "HTTP 500" in job.last_error
    assert job.run_at == t + timedelta(seconds=10)
    runner.run_once(t + timedelta(seconds=5))  # not due yet
    assert len(hook.requests) == 1
    runner.run_once(t + timedelta(seconds=10))
    job = jobs_of(nctx)[0]
    assert (job.status, job.attempts) == ("pending", 2) and job.run_at == t + timedelta(seconds=30)
    runner.run_once(t + timedelta(seconds=30))
    assert jobs_of(nctx)[0].status == "done"
    assert len(hook.requests) == 3
    headers, body = hook.requests[-1]
    payload = json.loads(body)
    assert payload["type"] == "alarm" and payload["alarm"]["server_name"] == "web-01"
    assert payload["alarm"]["severity"] == "critical"
    expected = hmac.new(
        SECRET.encode(), headers["x-hostward-timestamp"].encode() + b"." + body, hashlib.sha256
    )
    assert headers["x-hostward-signature"] == "sha256=" + expected.hexdigest()
    assert headers["x-hostward-event"] == "alarm" and headers["content-type"] == "application/json"


def test_auto_blocking_and_rolled_back_events(nctx: ManagerContext, hook: Hook) -> None:
    with nctx.uow() as s:
        sid = enrolled_server(s, NOW, name="edge").id
    configure(nctx, webhook={"enabled": True, "url": hook.url})
    with nctx.uow() as s:
        block = BlockedIp(
            server_id=sid,
            source="198.51.100.7",
            network="198.51.100.7/32",
            service="ssh",
            times_blocked=1,
            reason="brute force",
            first_blocked_at=NOW,
            latest_blocked_at=NOW,
            updated_at=NOW,
        )
        s.add(block)
    with nctx.uow() as s:  # blocked again: a second notice
        row = s.scalars(select(BlockedIp)).one()
        row.times_blocked += 1
    with pytest.raises(RuntimeError), nctx.uow() as s:  # never committed: nothing is sent
        s.add(
            BlockedIp(
                server_id=sid,
                source="198.51.100.8",
                network="x",
                service="ssh",
                times_blocked=1,
                first_blocked_at=NOW,
                latest_blocked_at=NOW,
                updated_at=NOW,
            )
        )
        s.flush()
        raise RuntimeError("rolled back")
    configure(nctx, auto_blocking=False)
    with nctx.uow() as s:
        s.scalars(select(BlockedIp)).one().times_blocked += 1
    scheduler(nctx).run_once(soon())
    kinds = [(json.loads(b)["type"], json.loads(b)["block"]["times_blocked"]) for _, b in hook.requests]
    assert kinds == [("auto_blocking", 1), ("auto_blocking", 2)]
    assert json.loads(hook.requests[0][1])["block"]["source"] == "198.51.100.7"


def test_daily_summary_at_its_time(nctx: ManagerContext, smtp: tuple[Inbox, int], hook: Hook) -> None:
    inbox, port = smtp
    with nctx.uow() as s:
        sid = enrolled_server(s, NOW, name="app").id
    raise_alarm(nctx, sid, "medium", n=1)
    configure(
        nctx,
        realtime_enabled=False,
        daily_time="10:00",
        timezone="Europe/Berlin",
        email={"enabled": True, "host": "127.0.0.1", "port": port, "recipients": ["ops@example.org"]},
        webhook={"enabled": True, "url": hook.url},
    )
    raise_alarm(nctx, sid, "high", n=2)  # real-time off: queued by nobody
    assert jobs_of(nctx) == []
    with nctx.uow() as s:
        # 08:59 UTC is 09:59 in Berlin (CET): too early
        assert notify.plan_daily(s, NOW + timedelta(minutes=59)) == {"queued": 0}
        assert notify.plan_daily(s, NOW + timedelta(hours=1)) == {"queued": 2, "date": "2025-03-10"}
        assert notify.plan_daily(s, NOW + timedelta(hours=3)) == {"queued": 0}  # once a day
    scheduler(nctx).run_once(soon())
    assert inbox.received.wait(5)
    msg = inbox.messages[0][2]
    assert msg["Subject"].strip().startswith("[hostward] Daily summary 2025-03-10: score ")
    text = msg.get_content()  # type: ignore[attr-defined]
    assert isinstance(text, str) and "Alarms in the period: 2 (2 unhandled in total)" in text
    summary = json.loads(hook.requests[0][1])
    assert summary["type"] == "daily_summary"
    assert summary["alarms"]["by_severity"] == {"high": 1, "medium": 1}
    assert summary["servers"]["total"] == 1
    with nctx.uow() as s:  # the next day, again
        assert notify.plan_daily(s, NOW + timedelta(days=1, hours=1))["queued"] == 2


def test_settings_api_and_console(nctx: ManagerContext, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    with nctx.uow() as s:
        auth.create_user(s, "admin", PASSWORD, "admin", actor="t")
        auth.create_user(s, "viewer", PASSWORD, "readonly", actor="t")
    app = create_app(nctx.settings, nctx, run_background=False)
    with TestClient(app, base_url="https://testserver") as client:
        token = client.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}).json()[
            "token"
        ]
        h = {"Authorization": f"Bearer {token}"}
        defaults = client.get("/api/v1/settings/notifications", headers=h).json()
        assert (defaults["daily_time"], defaults["realtime_enabled"], defaults["email"]["password_set"]) == (
            "10:00",
            True,
            False,
        )
        body = dict(defaults)
        body["email"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": port,
            "recipients": ["a@example.org"],
            "username": "",
            "password": "pw",
            "sender": "",
            "security": "none",
            "timeout_s": 5,
        }
        body["webhook"] = {"enabled": False, "url": "", "secret": "k", "timeout_s": 5}
        r = client.put("/api/v1/settings/notifications", headers=h, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["email"]["password_set"] and "password" not in r.json()["email"]
        body["email"].pop("password")  # left out: kept
        body["webhook"].pop("secret")
        assert client.put("/api/v1/settings/notifications", headers=h, json=body).json()["webhook"][
            "secret_set"
        ]
        with nctx.uow() as s:
            assert (ns.load(s).email.password, ns.load(s).webhook.secret) == ("pw", "k")
        bad = dict(body, daily_time="25:00")
        assert client.put("/api/v1/settings/notifications", headers=h, json=bad).status_code == 422
        bad = dict(body, masked_event_classes=["nope"])
        assert client.put("/api/v1/settings/notifications", headers=h, json=bad).status_code == 422
        r = client.post("/api/v1/settings/notifications/test", headers=h, json={"channel": "email"})
        assert r.status_code == 202 and r.json()["queued"]
        r = client.post("/api/v1/settings/notifications/test", headers=h, json={"channel": "webhook"})
        assert r.status_code == 202
        scheduler(nctx).run_once(soon())
        assert inbox.received.wait(5)
        assert inbox.messages[-1][2]["Subject"].strip() == "[hostward] Test notification"
        sent = client.get("/api/v1/settings/notifications/deliveries", headers=h).json()
        by_channel = {d["channel"]: d for d in sent}
        assert (by_channel["email"]["status"], by_channel["email"]["type"]) == ("done", "test")
        # no webhook URL: the failure is shown with the next attempt (retried with backoff)
        assert (
            by_channel["webhook"]["status"] == "pending" and "no URL" in by_channel["webhook"]["last_error"]
        )
        assert by_channel["webhook"]["next_attempt_at"]
        viewer = client.post("/api/v1/auth/login", json={"username": "viewer", "password": PASSWORD}).json()
        vh = {"Authorization": f"Bearer {viewer['token']}"}
        assert client.get("/api/v1/settings/notifications", headers=vh).status_code == 200
        assert client.put("/api/v1/settings/notifications", headers=vh, json=body).status_code == 403

        from tests.integration.test_console_views import flash
        from tests.managerapi import console_login

        csrf = console_login(client)
        page = client.get("/console/notifications")
        assert page.status_code == 200 and 'data-nav="notifications"' in page.text
        assert "(set; leave empty to keep)" in page.text
        form = {
            "csrf": csrf,
            "next": "/console/notifications",
            "realtime_enabled": "on",
            "daily_enabled": "on",
            "daily_time": "07:30",
            "timezone": "UTC",
            "severities": ["critical", "high"],
            "masked_event_classes": ["login_1001"],
            "email_enabled": "on",
            "email_host": "127.0.0.1",
            "email_port": str(port),
            "email_security": "none",
            "email_recipients": "x@example.org\ny@example.org",
            "webhook_url": "",
        }
        r = client.post("/console/notifications", data=form, follow_redirects=True)
        assert flash(r.text) == "ok: Notifications saved (email)."
        with nctx.uow() as s:
            saved = ns.load(s)
        assert (saved.daily_time, saved.severities, saved.email.recipients) == (
            "07:30",
            ["critical", "high"],
            ["x@example.org", "y@example.org"],
        )
        assert saved.email.password == "pw"  # kept
        r = client.post("/console/notifications", data=dict(form, daily_time="7"), follow_redirects=True)
        assert flash(r.text).startswith("error: daily_time")
        r = client.post(
            "/console/notifications/test", data={"csrf": csrf, "channel": "email"}, follow_redirects=True
        )
        assert flash(r.text) == "ok: Test e-mail queued; its outcome shows under Recent deliveries."
        scheduler(nctx).run_once(soon())
        page = client.get("/console/notifications").text
        assert 'data-delivery="test-email"' in page and 'data-delivery-status="done"' in page
