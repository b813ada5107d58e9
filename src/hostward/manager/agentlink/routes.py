"""The agent channel (``/agent/v1`` on the agent port); protocol described in ``hostward.wire.protocol``.

Every authenticated request that stores something is one small unit of work: the credential check and
the work share a transaction, so an unknown or revoked key (401) stores nothing. The two frequent
requests stay off the database when they can (``hotpath``): a heartbeat that only refreshes last-seen
and health figures is answered from memory and written with the others once a second, and a poll of a
server whose previous poll found nothing waits without a query. Commands are long-polled: a poll returns
at once when commands are queued, else it waits for an in-process wake-up (a command queued by this
replica, after its commit) or for the per-process ``AgentLinkTicker``, which looks once a second, in one
query, for commands queued by any replica for the agents waiting (or between two polls) here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostward.core.errors import Unauthorized
from hostward.core.ids import sha256_hex
from hostward.manager.agentlink import ingest, pki
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.fastlane import watch_disconnect
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.context import ManagerContext
from hostward.manager.deps import Ctx
from hostward.manager.errors import envelope
from hostward.manager.policies import service as policies
from hostward.wire import (
    Command,
    CommandResult,
    CommandsResponse,
    EnrollRequest,
    EnrollResponse,
    EventBatchResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    PolicyBundle,
    RawEventBatch,
)

log = logging.getLogger("hostward.manager.agentlink")

MAX_BODY_BYTES = 8 * 1024 * 1024
# An oversized body is read and discarded up to this much so that the client, still uploading, gets
# the 413 instead of a connection reset; beyond it the connection is simply closed after the 413.
_DRAIN_MAX_BYTES = 64 * 1024 * 1024
SWEEP_INTERVAL_S = 1.0
REVOCATION_OVERLAP = timedelta(seconds=30)

router = APIRouter(tags=["agent"])


def agent_key(request: Request) -> str:
    """The bearer agent key; checked for presence before the body is parsed (401 before 422)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("agent credential required (Authorization: Bearer <agent key>)")
    return value.strip()


AgentKey = Annotated[str, Depends(agent_key)]


def _command(row: AgentCommand) -> Command:
    return Command(id=row.id, kind=row.kind, payload=row.payload, created_at=row.created_at)


@router.get("/ca", response_class=Response)
def get_ca(ctx: Ctx) -> Response:
    """The manager's CA certificate (PEM); agents compare its SHA-256 with the pinned fingerprint."""
    return Response(pki.ca_pem(ctx.settings), media_type="application/x-pem-file")


@router.post("/enroll")
def enroll(req: EnrollRequest, ctx: Ctx) -> EnrollResponse:
    with ctx.uow() as s:
        server, raw_key = agentlink.enroll(s, req, ctx.clock.now(), ctx.settings)
        return EnrollResponse(
            server_id=server.id,
            agent_key=raw_key,
            region=server.region,
            heartbeat_interval=ctx.settings.heartbeat_interval,
        )


@router.post("/heartbeat")
async def heartbeat(req: HeartbeatRequest, key: AgentKey, ctx: Ctx) -> HeartbeatResponse:
    """A heartbeat that changes nothing but last-seen and health figures is answered from memory and
    written with the others once a second; any other one is recorded at once (see ``hotpath``)."""
    key_hash = sha256_hex(key)
    server_id = ctx.agents.server_for(key_hash)
    if server_id is not None:
        snap = ctx.agents.snapshot(server_id)
        if snap is not None and agentlink.heartbeat_from_memory(snap, req, ctx.settings):
            now = ctx.clock.now()
            ctx.agents.buffer_beat(server_id, now, req.health.model_dump(mode="json"))
            ctx.agents.counters["heartbeats_from_memory"] += 1
            return HeartbeatResponse(
                server_time=now,
                heartbeat_interval=ctx.settings.heartbeat_interval,
                policy_version=snap.policy_version,
                commands_pending=ctx.wakeups.maybe_pending(server_id),
            )
    return await run_in_threadpool(_heartbeat_full, ctx, key_hash, key, req)


def _heartbeat_full(ctx: ManagerContext, key_hash: str, key: str, req: HeartbeatRequest) -> HeartbeatResponse:
    ctx.agents.counters["heartbeats_full"] += 1
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        response = agentlink.heartbeat(s, server, req, now, ctx.settings)
        server_id, snap = server.id, agentlink.snapshot_of(server)
    ctx.agents.remember(key_hash, server_id)
    ctx.agents.drop_beat(server_id)
    ctx.agents.set_snapshot(server_id, snap)
    return response


@router.get("/commands")
async def poll_commands(
    request: Request,
    key: AgentKey,
    ctx: Ctx,
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds to hold the poll open")] = 0,
) -> CommandsResponse:
    """Long poll. Costs no database work while nothing is queued: a server whose previous poll found
    nothing (``wakeups.is_idle``) waits straight away; it is woken by a commit of this replica or by
    the ticker's once-a-second look for commands queued by any replica."""
    hold = min(wait, float(ctx.settings.long_poll_seconds))
    key_hash = sha256_hex(key)
    cached = ctx.agents.server_for(key_hash)
    commands: list[Command] = []
    if cached is None:
        server_id, commands = await run_in_threadpool(_authenticate_and_claim, ctx, key_hash, key)
    else:
        server_id = cached
        if hold <= 0 or not ctx.wakeups.is_idle(server_id):
            commands = await run_in_threadpool(_claim, ctx, server_id)
    if commands or hold <= 0 or ctx.wakeups.closing:
        if not commands:
            ctx.wakeups.mark_idle(server_id)
        return CommandsResponse(commands=commands)
    ticker: AgentLinkTicker | None = getattr(request.app.state, "agentlink_ticker", None)
    if ticker is not None:
        ticker.start()
    return await hold_for_commands(ctx, server_id, hold, request.receive)


async def hold_for_commands(
    ctx: ManagerContext, server_id: str, hold: float, receive: Receive
) -> CommandsResponse:
    """Hold a poll up to ``hold`` seconds: claim when woken, answer early if the agent hangs up.

    One future, one timer and one small task (watching for the disconnect) per waiting agent; no thread.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hold
    gone: asyncio.Future[None] = loop.create_future()
    watcher = loop.create_task(watch_disconnect(receive, gone))
    commands: list[Command] = []
    try:
        while not commands:
            woken: asyncio.Future[None] = loop.create_future()

            def on_gone(_: asyncio.Future[None], woken: asyncio.Future[None] = woken) -> None:
                _expire(woken)

            ctx.wakeups.register(server_id, loop, woken)
            timer = loop.call_at(deadline, _expire, woken)
            gone.add_done_callback(on_gone)
            try:
                await woken
            finally:
                timer.cancel()
                gone.remove_done_callback(on_gone)
                ctx.wakeups.unregister(server_id, loop, woken)
            # Commands claimed for an agent that already hung up would be marked delivered and lost.
            if ctx.wakeups.closing or gone.done() or loop.time() >= deadline:
                break
            commands = await run_in_threadpool(_claim, ctx, server_id)
    finally:
        watcher.cancel()
    if not commands:
        ctx.wakeups.mark_idle(server_id)
    return CommandsResponse(commands=commands)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _authenticate_and_claim(ctx: ManagerContext, key_hash: str, key: str) -> tuple[str, list[Command]]:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        server_id = server.id
        commands = [_command(c) for c in agentlink.claim_commands(s, server_id, now)]
    ctx.agents.remember(key_hash, server_id)
    ctx.wakeups.claimed(server_id)
    return server_id, commands


def _claim(ctx: ManagerContext, server_id: str) -> list[Command]:
    ctx.wakeups.claimed(server_id)
    with ctx.uow() as s:
        return [_command(c) for c in agentlink.claim_commands(s, server_id, ctx.clock.now())]


@router.post("/commands/{command_id}/result")
def command_result(command_id: str, result: CommandResult, key: AgentKey, ctx: Ctx) -> dict[str, str]:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        command = agentlink.complete_command(s, server, command_id, result, now)
        return {"id": command.id, "status": command.status}


@router.post("/events")
def post_events(batch: RawEventBatch, key: AgentKey, ctx: Ctx) -> EventBatchResponse:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        return EventBatchResponse(acks=ingest.ingest_batch(s, server, batch, now))


@router.get("/policy")
def get_policy(key: AgentKey, ctx: Ctx) -> PolicyBundle:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        return policies.bundle_for(s, server)


# ---- once-a-second ticker ---------------------------------------------------------------------------


class AgentLinkTicker:
    """Once a second, in one thread-pool hop: writes the buffered heartbeats, drops credentials revoked
    by other replicas from the cache, and wakes this process's long polls whose server has a queued
    command.

    The command look catches what the in-process wake-up cannot see: commands queued by another manager
    replica (or by a CLI/scheduler process) and commands queued in the moment between a poll's claim
    and its wait. It covers the servers waiting now and the ``idle`` ones (between two polls).
    """

    def __init__(self, ctx: ManagerContext, interval: float = SWEEP_INTERVAL_S) -> None:
        self._ctx = ctx
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the ticker in the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hostward-agentlink-tick")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Last heartbeats of a clean shutdown are written too.
        with contextlib.suppress(Exception):
            await run_in_threadpool(self.flush, self._ctx.agents.take_beats())
        log.info("agent channel: %s", self._ctx.agents.counters)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            beats = self._ctx.agents.take_beats()
            targets = self._ctx.wakeups.sweep_targets()
            try:
                ready = await run_in_threadpool(self._tick, beats, targets)
            except Exception:  # the database may be briefly unreachable; try again next second
                log.exception("agent channel tick failed")
                for server_id, beat in beats.items():
                    self._ctx.agents.buffer_beat(server_id, *beat)
                continue
            for server_id in ready:
                self._ctx.wakeups.notify(server_id)

    def _tick(self, beats: dict[str, Any], targets: list[str]) -> set[str]:
        self.flush(beats)
        self._check_revocations()
        if not targets:
            return set()
        with self._ctx.uow() as session:
            return agentlink.servers_with_queued_commands(session, targets)

    def flush(self, beats: dict[str, Any]) -> None:
        if not beats:
            return
        ctx = self._ctx
        with ctx.uow() as session:
            stored = agentlink.flush_heartbeats(session, beats, ctx.clock.now(), ctx.settings)
        for server_id in beats:
            found = stored.get(server_id)
            if found is None:  # deleted meanwhile
                ctx.agents.forget_server(server_id)
                ctx.wakeups.forget(server_id)
            else:
                ctx.agents.refresh_snapshot(server_id, *found)

    def _check_revocations(self) -> None:
        ctx = self._ctx
        now = ctx.clock.now()
        since = ctx.agents.revocations_checked_at
        ctx.agents.revocations_checked_at = now
        if since is None or not ctx.agents.cached_keys():
            return
        with ctx.uow() as session:
            # Overlapping windows: a revocation committed late with an earlier timestamp is still seen.
            revoked = agentlink.revoked_key_hashes(session, since - REVOCATION_OVERLAP)
        if revoked:
            ctx.agents.forget_keys(revoked)


# ---- request body limit -----------------------------------------------------------------------------


class BodySizeLimit:
    """Pure ASGI middleware: bodies larger than ``max_bytes`` get a 413 error envelope."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _drain(receive, _DRAIN_MAX_BYTES)
            response = envelope("payload_too_large", self._message(), 413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, _DRAIN_MAX_BYTES)
                    # An HTTPException passes through FastAPI's body reading unchanged and is turned
                    # into the error envelope by the app's handler.
                    raise StarletteHTTPException(413, self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Receive, limit: int) -> None:
    drained = 0
    while drained <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
