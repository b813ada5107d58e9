"""Application factories: the console + REST API app and the agent-channel app.

Nothing happens at import; ``create_app(settings)`` builds everything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from hostward import __version__
from hostward.manager.context import ManagerContext
from hostward.manager.errors import install_error_handlers
from hostward.manager.settings import ManagerSettings

API_PREFIX = "/api/v1"


def _api_routers() -> list[APIRouter]:
    # Imported here, not at module import, so that importing the app module has no side effects.
    from hostward.manager.agentlink.admin_routes import router as enrollment
    from hostward.manager.alarms.routes import router as alarms
    from hostward.manager.audit.routes import router as audit
    from hostward.manager.auth.routes import router as auth
    from hostward.manager.baseline.routes import router as baseline
    from hostward.manager.dashboard.routes import router as dashboard
    from hostward.manager.fim.routes import router as fim
    from hostward.manager.loginsec.routes import router as loginsec
    from hostward.manager.malware.routes import router as malware
    from hostward.manager.notify.routes import router as notifications
    from hostward.manager.policies.routes import router as policies
    from hostward.manager.protection.routes import router as protection
    from hostward.manager.quotas.routes import router as quotas
    from hostward.manager.ransomware.routes import router as ransomware
    from hostward.manager.regions.routes import router as regions
    from hostward.manager.scans.routes import router as scans
    from hostward.manager.servers.routes import router as servers
    from hostward.manager.vulns.routes import router as vulns
    from hostward.manager.wtp.routes import router as wtp

    return [
        auth,
        regions,
        servers,
        protection,
        quotas,
        policies,
        scans,
        alarms,
        audit,
        dashboard,
        enrollment,
        loginsec,
        malware,
        fim,
        vulns,
        baseline,
        notifications,
        wtp,
        ransomware,
    ]


def create_app(
    settings: ManagerSettings,
    ctx: ManagerContext | None = None,
    *,
    run_background: bool = True,
) -> FastAPI:
    """Build the console + REST API app. ``run_background`` starts the scheduler in this process."""
    context = ctx or ManagerContext.from_settings(settings)
    _install_notifications(context)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler: Any = None
        if run_background and settings.scheduler_enabled:
            from hostward.manager.scheduler.runner import Scheduler

            scheduler = Scheduler(context)
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()

    app = FastAPI(
        title="hostward manager API",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = context
    install_error_handlers(app)
    for router in _api_routers():
        app.include_router(router, prefix=API_PREFIX)

    @app.get(f"{API_PREFIX}/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    from hostward.manager.console.views import mount_console

    mount_console(app)
    return app


def _install_notifications(ctx: ManagerContext) -> None:
    """Real-time notifications are queued with the events that cause them (session hooks)."""
    from hostward.manager.notify.realtime import install

    install(ctx.sessions)


def create_agent_app(ctx: ManagerContext) -> FastAPI:
    """Build the agent-channel app (served on its own HTTPS port).

    Its lifespan runs the once-a-second ticker (buffered heartbeats written, commands queued by other
    replicas delivered to this replica's long-polling agents); bodies over 8 MiB get a 413 envelope.
    """
    from hostward.manager.agentlink.fastlane import AgentFastLane
    from hostward.manager.agentlink.ingest import load_builtin_handlers
    from hostward.manager.agentlink.routes import (
        MAX_BODY_BYTES,
        AgentLinkTicker,
        BodySizeLimit,
        hold_for_commands,
    )
    from hostward.manager.agentlink.routes import router as agent_router
    from hostward.manager.vulns.agent_routes import router as vulns_agent_router
    from hostward.manager.wtp.agent_routes import router as wtp_agent_router

    load_builtin_handlers()
    _install_notifications(ctx)
    ticker = AgentLinkTicker(ctx)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ticker.start()
        try:
            yield
        finally:
            await ticker.stop()

    app = FastAPI(
        title="hostward agent channel",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.agentlink_ticker = ticker
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    # Outermost: answers known agents' plain heartbeats and idle polls from memory (see fastlane).
    app.add_middleware(AgentFastLane, ctx=ctx, hold=hold_for_commands)
    app.include_router(agent_router, prefix="/agent/v1")
    app.include_router(vulns_agent_router, prefix="/agent/v1")
    app.include_router(wtp_agent_router, prefix="/agent/v1")
    return app
