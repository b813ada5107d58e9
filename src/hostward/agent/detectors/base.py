"""The detector protocol, the registry of detector factories and the set of live detectors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from hostward.wire import AlarmEvent, DetectorHealth, PolicyBundle, RecordEvent

log = logging.getLogger(__name__)

DetectorEvent = AlarmEvent | RecordEvent


@dataclass(frozen=True)
class Observation:
    """Something a collector saw: ``kind`` routes it ("accounts", later "auth_log_line", ...)."""

    kind: str
    data: Any


@runtime_checkable
class Detector(Protocol):
    """What every detector offers the runtime."""

    name: str
    inputs: frozenset[str]
    heavy: bool  # paused while the agent is over its CPU budget

    def configure(self, bundle: PolicyBundle | None) -> None:
        """Apply the policy bundle (``None`` before the first one arrives)."""

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        """Consume one observation; return the events it causes."""
        ...

    def health(self) -> DetectorHealth: ...

    def stop(self) -> None: ...


DetectorFactory = Callable[[], Detector]


class DuplicateDetector(ValueError):
    pass


class DetectorRegistry:
    """Detector factories by name."""

    def __init__(self) -> None:
        self._factories: dict[str, DetectorFactory] = {}

    def register(self, name: str, factory: DetectorFactory) -> None:
        if name in self._factories:
            raise DuplicateDetector(f"detector {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return list(self._factories)

    def create(self, names: Iterable[str] | None = None) -> DetectorSet:
        chosen = list(self._factories) if names is None else list(names)
        detectors = []
        for name in chosen:
            detector = self._factories[name]()
            if detector.name != name:
                raise ValueError(f"detector registered as {name!r} calls itself {detector.name!r}")
            detectors.append(detector)
        return DetectorSet(detectors)


class DetectorSet:
    """Live detectors of one agent run."""

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self._detectors = {d.name: d for d in detectors}
        self._failed: dict[str, str] = {}
        self.paused_heavy = False
        self._stopped = False

    def __getitem__(self, name: str) -> Detector:
        return self._detectors[name]

    def __contains__(self, name: object) -> bool:
        return name in self._detectors

    def names(self) -> list[str]:
        return list(self._detectors)

    def configure(self, bundle: PolicyBundle | None) -> None:
        for name, detector in self._detectors.items():
            try:
                detector.configure(bundle)
                self._failed.pop(name, None)
            except Exception as exc:
                log.exception("detector %s: configure failed", name)
                self._failed[name] = f"configure: {type(exc).__name__}: {exc}"

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        events: list[DetectorEvent] = []
        for name, detector in self._detectors.items():
            if observation.kind not in detector.inputs or name in self._failed:
                continue
            if detector.heavy and self.paused_heavy:
                continue
            try:
                events.extend(detector.feed(observation, now))
            except Exception as exc:
                log.exception("detector %s: feed failed", name)
                self._failed[name] = f"feed: {type(exc).__name__}: {exc}"
        return events

    def health(self) -> list[DetectorHealth]:
        out: list[DetectorHealth] = []
        for name, detector in self._detectors.items():
            if name in self._failed:
                out.append(DetectorHealth(name=name, status="failed", reason=self._failed[name][:1024]))
                continue
            current = detector.health()
            if detector.heavy and self.paused_heavy and current.status == "running":
                current = current.model_copy(
                    update={"status": "degraded", "reason": "paused: agent over its CPU budget"}
                )
            out.append(current)
        return out

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for name, detector in self._detectors.items():
            try:
                detector.stop()
            except Exception:
                log.exception("detector %s: stop failed", name)
