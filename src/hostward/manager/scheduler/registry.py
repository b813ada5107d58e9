"""Job kinds and periodic tasks known to a scheduler, registered by name (duplicates rejected)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hostward.core.errors import HostwardError
from hostward.manager.settings import ManagerSettings


@dataclass(frozen=True)
class JobRun:
    """One attempt at a claimed job, as handed to its handler."""

    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    now: datetime
    instance: str
    settings: ManagerSettings


JobHandler = Callable[[Session, JobRun], object]
"""Runs inside the job's transaction; raising rolls the work back and schedules a retry."""

PeriodicHandler = Callable[[Session, datetime, ManagerSettings], object]
"""Runs in its own transaction once per interval, on whichever replica advanced the task."""


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: JobHandler
    max_attempts: int = 5


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str
    interval_s: int
    handler: PeriodicHandler


class DuplicateRegistration(HostwardError):
    code = "duplicate_registration"


class Registry:
    """Names -> job kinds and periodic tasks. Built explicitly (see ``builtin.builtin_registry``)."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobKind] = {}
        self._periodic: dict[str, PeriodicTaskSpec] = {}

    def add_job(self, name: str, handler: JobHandler, *, max_attempts: int = 5) -> None:
        if name in self._jobs:
            raise DuplicateRegistration(f"job kind {name!r} is already registered")
        if not 1 <= max_attempts <= 100:
            raise ValueError("max_attempts must be between 1 and 100")
        if len(name) > 64:
            raise ValueError("job kind names are at most 64 characters")
        self._jobs[name] = JobKind(name, handler, max_attempts)

    def add_periodic(self, name: str, interval_s: int, handler: PeriodicHandler) -> None:
        if name in self._periodic:
            raise DuplicateRegistration(f"periodic task {name!r} is already registered")
        if interval_s < 1:
            raise ValueError("interval_s must be at least 1 second")
        if len(name) > 64:
            raise ValueError("periodic task names are at most 64 characters")
        self._periodic[name] = PeriodicTaskSpec(name, interval_s, handler)

    def job(self, name: str) -> JobKind | None:
        return self._jobs.get(name)

    def periodic(self, name: str) -> PeriodicTaskSpec | None:
        return self._periodic.get(name)

    @property
    def job_kinds(self) -> list[str]:
        return sorted(self._jobs)

    @property
    def periodic_tasks(self) -> list[PeriodicTaskSpec]:
        return [self._periodic[name] for name in sorted(self._periodic)]
