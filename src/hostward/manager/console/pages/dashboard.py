"""Dashboard: agent status ring, protection, risky servers, quota usage, unhandled alarms."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hostward.manager.alarms import service as alarms
from hostward.manager.console.trend import risk_trend_chart
from hostward.manager.console.web import User, ctx_of, current_region, render
from hostward.manager.dashboard import service as dashboard
from hostward.manager.quotas.models import EDITIONS
from hostward.wire.alarms import SEVERITIES

router = APIRouter()

RING_RADIUS = 52
RING_COLOURS = {"online": "#23a566", "offline": "#e0574d", "not_installed": "#b4bcc8"}


@dataclass(frozen=True)
class RingSegment:
    key: str
    count: int
    colour: str
    dash: float
    gap: float
    offset: float


def ring_segments(counts: dict[str, int]) -> list[RingSegment]:
    """Arcs of an SVG donut drawn with ``stroke-dasharray`` on circles (no JavaScript, no library)."""
    circumference = 2 * math.pi * RING_RADIUS
    total = sum(counts.values())
    segments = []
    done = 0.0
    for key, count in counts.items():
        if total == 0 or count == 0:
            continue
        length = circumference * count / total
        segments.append(
            RingSegment(
                key,
                count,
                RING_COLOURS[key],
                round(length, 3),
                round(circumference - length, 3),
                round(-done, 3),
            )
        )
        done += length
    return segments


@router.get("/")
def dashboard_page(request: Request, user: User) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    with ctx.uow() as session:
        data = dashboard.overview(session, region, ctx.clock.now())
        recent, _ = alarms.list_alarms(session, region=region, status="unhandled", limit=6)
        quota_rows = [(e, data["quotas"][e]) for e in EDITIONS if e in data["quotas"]]
        return render(
            request,
            session,
            user,
            "dashboard.html",
            active="dashboard",
            title="Dashboard",
            data=data,
            ring=ring_segments(data["agent_status"]),
            ring_radius=RING_RADIUS,
            ring_colours=RING_COLOURS,
            quota_rows=quota_rows,
            severities=SEVERITIES,
            recent=recent,
            score=data["security_score"],
            trend=risk_trend_chart(data["risk_trend"]),
        )
