"""Dashboard API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostward.manager.dashboard import service
from hostward.manager.deps import Ctx, Reader

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard")
def dashboard(_p: Reader, ctx: Ctx, region: str | None = None) -> dict[str, Any]:
    with ctx.uow() as session:
        return service.overview(session, region, ctx.clock.now())
