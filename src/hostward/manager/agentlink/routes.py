"""The agent channel (``/agent/v1`` on the agent port); protocol described in ``hostward.wire.protocol``.

Every authenticated request is one small unit of work: the credential check and the work share a
transaction, so an unknown or revoked key (401) stores nothing. Commands are long-polled: a poll returns
at once when commands are queued, else it waits for an in-process wake-up (a command queued by this
replica, after its commit) or for the per-process ``CommandSweeper``, which looks once a second, in one
query, for commands queued for the waiting agents by any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hostward.core.errors import Unauthorized
from hostward.manager.agentlink import ingest, pki
from hostward.manager.agentlink import service as agentlink
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
def heartbeat(req: HeartbeatRequest, key: AgentKey, ctx: Ctx) -> HeartbeatResponse:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        return agentlink.heartbeat(s, server, req, now, ctx.settings)


_DISCONNECT_CHECK_S = 5.0


@router.get("/commands")
async def poll_commands(
    request: Request,
    key: AgentKey,
    ctx: Ctx,
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds to hold the poll open")] = 0,
) -> CommandsResponse:
    server_id, commands = await run_in_threadpool(_authenticate_and_claim, ctx, key)
    hold = min(wait, float(ctx.settings.long_poll_seconds))
    if commands or hold <= 0 or ctx.wakeups.closing:
        return CommandsResponse(commands=commands)
    sweeper: CommandSweeper | None = getattr(request.app.state, "command_sweeper", None)
    if sweeper is not None:
        sweeper.start()
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()
    ctx.wakeups.register(server_id, loop, woken)
    try:
        deadline = loop.time() + hold
        while (remaining := deadline - loop.time()) > 0:
            try:
                # Wake at least every few seconds to notice an agent that hung up.
                await asyncio.wait_for(woken.wait(), min(remaining, _DISCONNECT_CHECK_S))
            except TimeoutError:
                if await request.is_disconnected():
                    break
                continue
            woken.clear()
            # Commands claimed for an agent that already hung up would be marked delivered and lost.
            if ctx.wakeups.closing or await request.is_disconnected():
                break
            commands = await run_in_threadpool(_claim, ctx, server_id)
            if commands:
                break
    finally:
        ctx.wakeups.unregister(server_id, loop, woken)
    return CommandsResponse(commands=commands)


def _authenticate_and_claim(ctx: ManagerContext, key: str) -> tuple[str, list[Command]]:
    now = ctx.clock.now()
    with ctx.uow() as s:
        server = agentlink.authenticate_agent(s, key, now)
        return server.id, [_command(c) for c in agentlink.claim_commands(s, server.id, now)]


def _claim(ctx: ManagerContext, server_id: str) -> list[Command]:
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


# ---- command sweep ----------------------------------------------------------------------------------


class CommandSweeper:
    """Once a second, wakes this process's long polls whose server has a queued command.

    Catches what the in-process wake-up cannot see: commands queued by another manager replica (or by
    a CLI/scheduler process) and commands queued in the moment between a poll's claim and its wait.
    """

    def __init__(self, ctx: ManagerContext, interval: float = SWEEP_INTERVAL_S) -> None:
        self._ctx = ctx
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sweep in the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hostward-command-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            waiting = self._ctx.wakeups.waiting_servers()
            if not waiting:
                continue
            try:
                ready = await run_in_threadpool(self._query, waiting)
            except Exception:  # the database may be briefly unreachable; try again next second
                log.exception("command sweep failed")
                continue
            for server_id in ready:
                self._ctx.wakeups.notify(server_id)

    def _query(self, server_ids: list[str]) -> set[str]:
        with self._ctx.uow() as session:
            return agentlink.servers_with_queued_commands(session, server_ids)


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
