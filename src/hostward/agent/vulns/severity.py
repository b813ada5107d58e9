"""CVSS scores and severity bands: >= 9 critical, 7-9 high, 4-7 medium, < 4 low.

When a feed gives only a vector, the base score is computed with the ``cvss`` library (v2, v3.x, v4).
Without any CVSS, a label (OSV ``database_specific.severity``, Debian urgency) gives the band.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4

_LABELS = {
    "critical": "critical",
    "high": "high",
    "important": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unimportant": "low",
}
_PREFERENCE = {"CVSS_V3": 0, "CVSS_V4": 1, "CVSS_V2": 2}


@dataclass(frozen=True)
class Severity:
    band: str  # critical | high | medium | low | unknown
    score: float | None = None
    vector: str | None = None
    source: str = ""  # cvss | label | urgency | none


UNKNOWN = Severity("unknown", source="none")


def band(score: float) -> str:
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


@lru_cache(maxsize=65536)
def score_vector(kind: str, vector: str) -> float:
    """Base score of a CVSS vector; raises ValueError when it is not a valid vector."""
    try:
        if kind == "CVSS_V4" or vector.startswith("CVSS:4"):
            return float(CVSS4(vector).base_score)
        if kind == "CVSS_V3" or vector.startswith("CVSS:3"):
            return float(CVSS3(vector).scores()[0])
        return float(CVSS2(vector).scores()[0])
    except Exception as exc:  # the library raises its own error types for malformed vectors
        raise ValueError(f"invalid {kind} vector {vector!r}: {exc}") from exc


def from_osv(severities: Any, labels: list[Any]) -> Severity:
    """From an OSV ``severity`` list (vectors or numeric scores) and fallback labels."""
    best: tuple[int, Severity] | None = None
    for item in severities if isinstance(severities, list) else []:
        if not isinstance(item, dict):
            continue
        kind, raw = str(item.get("type", "")), item.get("score")
        if kind not in _PREFERENCE or raw is None:
            continue
        try:
            score = float(raw) if isinstance(raw, int | float) else score_vector(kind, str(raw))
        except ValueError:
            try:
                score = float(str(raw))
            except ValueError:
                continue
        sev = Severity(band(score), score, None if isinstance(raw, int | float) else str(raw), "cvss")
        rank = _PREFERENCE[kind]
        if best is None or rank < best[0]:
            best = (rank, sev)
    if best is not None:
        return best[1]
    for label in labels:
        name = _LABELS.get(str(label).strip().lower())
        if name:
            return Severity(name, source="label")
    return UNKNOWN


def from_urgency(urgency: str) -> Severity:
    """Debian security tracker urgency (``low``, ``medium**``, ``not yet assigned``, ...)."""
    name = _LABELS.get(urgency.strip().rstrip("*").strip().lower())
    return Severity(name, source="urgency") if name else UNKNOWN


_ORDER = {"critical": 4, "high": 3, "medium": 2, "low": 1, "unknown": 0}


def worse(a: Severity, b: Severity) -> Severity:
    """The more severe of two (a CVSS score beats a label of the same band)."""
    ka = (_ORDER[a.band], a.score is not None, a.score or 0.0)
    kb = (_ORDER[b.band], b.score is not None, b.score or 0.0)
    return a if ka >= kb else b
