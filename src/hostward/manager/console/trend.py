"""The dashboard's 7-day risk trend as inline SVG geometry (no JavaScript, no chart library).

Pure arithmetic: day points in, polylines (one per contiguous run of known days), dots, axis ticks out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

WIDTH = 560
HEIGHT = 200
PAD_LEFT = 36
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28
SERIES = (
    ("alarms", "Unhandled alarms", "#e0574d"),
    ("vulnerabilities", "Unfixed vulnerabilities", "#e8a33a"),
    ("baseline", "Unsafe settings and weak passwords", "#2f7cf6"),
)


@dataclass
class Dot:
    x: float
    y: float
    value: int
    day: str


@dataclass
class Series:
    key: str
    label: str
    colour: str
    lines: list[str] = field(default_factory=list)  # "x,y x,y ..." per contiguous run
    dots: list[Dot] = field(default_factory=list)


@dataclass
class TrendChart:
    width: int
    height: int
    series: list[Series]
    x_labels: list[tuple[float, str]]
    y_ticks: list[tuple[float, int]]
    baseline_y: float
    left: int
    right: int
    scores: list[tuple[str, int | None]]


def _nice_max(value: int) -> int:
    """The axis top: 4 at least, else rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 4:
        return 4
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def risk_trend_chart(points: list[dict[str, Any]]) -> TrendChart:
    """Geometry for ``score.trend`` output (a day without a snapshot leaves a gap)."""
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    values = [int(p.get(key) or 0) for p in points for key, _, _ in SERIES if p.get("score") is not None]
    top = _nice_max(max(values, default=0))
    step_x = inner_w / max(1, len(points) - 1)

    def x_at(i: int) -> float:
        return round(PAD_LEFT + i * step_x, 1)

    def y_at(v: int) -> float:
        return round(PAD_TOP + inner_h - inner_h * v / top, 1)

    series = []
    for key, label, colour in SERIES:
        s = Series(key, label, colour)
        run: list[str] = []
        for i, p in enumerate(points):
            if p.get("score") is None:
                if run:
                    s.lines.append(" ".join(run))
                run = []
                continue
            value = int(p.get(key) or 0)
            run.append(f"{x_at(i)},{y_at(value)}")
            s.dots.append(Dot(x_at(i), y_at(value), value, str(p["day"])))
        if run:
            s.lines.append(" ".join(run))
        series.append(s)
    labels = [(x_at(i), str(p["day"])[5:]) for i, p in enumerate(points)]
    ticks = [(y_at(v), v) for v in (0, top // 2, top)]
    return TrendChart(
        width=WIDTH,
        height=HEIGHT,
        series=series,
        x_labels=labels,
        y_ticks=ticks,
        baseline_y=y_at(0),
        left=PAD_LEFT,
        right=WIDTH - PAD_RIGHT,
        scores=[(str(p["day"])[5:], p.get("score")) for p in points],
    )
