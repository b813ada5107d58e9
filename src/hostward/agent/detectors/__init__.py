"""Detectors: pure logic fed with observations, returning events. No I/O, no threads.

A detector implements the small ``Detector`` protocol (configure / feed / health / stop). Factories are
registered by name in a ``DetectorRegistry`` (duplicates rejected); the built-ins are listed explicitly in
``BUILTIN_DETECTORS``, nothing registers itself at import time. The runtime owns a ``DetectorSet`` of live
instances, routes observations by kind and turns a crashing detector into a "failed" health entry
instead of a silent stop.
"""

from __future__ import annotations

from hostward.agent.detectors.accounts import AccountsDetector
from hostward.agent.detectors.base import (
    Detector,
    DetectorEvent,
    DetectorFactory,
    DetectorRegistry,
    DetectorSet,
    DuplicateDetector,
    Observation,
)

BUILTIN_DETECTORS: dict[str, DetectorFactory] = {
    "accounts": AccountsDetector,
}


def default_registry() -> DetectorRegistry:
    """A registry holding the built-in detectors."""
    registry = DetectorRegistry()
    for name, factory in BUILTIN_DETECTORS.items():
        registry.register(name, factory)
    return registry


__all__ = [
    "BUILTIN_DETECTORS",
    "Detector",
    "DetectorEvent",
    "DetectorFactory",
    "DetectorRegistry",
    "DetectorSet",
    "DuplicateDetector",
    "Observation",
    "default_registry",
]
