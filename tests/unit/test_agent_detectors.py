"""Detector registry: registration by name, duplicates rejected, built-ins explicit, failures visible."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hostward.agent.detectors import (
    BUILTIN_DETECTORS,
    Detector,
    DetectorEvent,
    DetectorRegistry,
    DuplicateDetector,
    Observation,
    default_registry,
)
from hostward.wire import DetectorHealth, PolicyBundle

NOW = datetime(2025, 1, 1, tzinfo=UTC)


class Exploding:
    name = "exploding"
    inputs = frozenset({"accounts"})
    heavy = True

    def __init__(self) -> None:
        self.stopped = False

    def configure(self, bundle: PolicyBundle | None) -> None:
        pass

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        raise RuntimeError("boom")

    def health(self) -> DetectorHealth:
        return DetectorHealth(name=self.name, status="running")

    def stop(self) -> None:
        self.stopped = True


def test_builtins_are_listed_explicitly() -> None:
    assert list(BUILTIN_DETECTORS) == ["accounts"]
    assert default_registry().names() == ["accounts"]
    assert isinstance(default_registry().create()["accounts"], Detector)


def test_duplicate_registration_rejected() -> None:
    reg = default_registry()
    with pytest.raises(DuplicateDetector):
        reg.register("accounts", Exploding)


def test_name_must_match_registration() -> None:
    reg = DetectorRegistry()
    reg.register("other", Exploding)
    with pytest.raises(ValueError):
        reg.create()


def test_failing_detector_is_reported_failed_and_others_keep_running() -> None:
    reg = default_registry()
    reg.register("exploding", Exploding)
    dset = reg.create()
    dset.configure(None)
    assert dset.feed(Observation("accounts", []), NOW) == []
    health = {h.name: h for h in dset.health()}
    assert health["exploding"].status == "failed" and "boom" in health["exploding"].reason
    assert health["accounts"].status == "disabled"
    dset.stop()
    dset.stop()  # idempotent
    assert dset["exploding"].stopped  # type: ignore[attr-defined]


def test_heavy_detectors_pause_over_budget() -> None:
    reg = DetectorRegistry()
    reg.register("exploding", Exploding)
    dset = reg.create()
    dset.paused_heavy = True
    assert dset.feed(Observation("accounts", []), NOW) == []  # not fed, so it did not explode
    [health] = dset.health()
    assert health.status == "degraded" and "budget" in health.reason
