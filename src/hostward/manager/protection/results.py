"""Per-server answers of the batch actions that bind quotas (protection and web tamper protection
enable / disable / switch): each server succeeds or fails on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from hostward.core.errors import HostwardError, Invalid
from hostward.manager.context import ManagerContext
from hostward.manager.schemas_common import ErrorInfo


class ServerResult(BaseModel):
    server_id: str
    ok: bool
    quota_id: str | None = None
    error: ErrorInfo | None = None


class ServerOutcome(Protocol):
    """What a domain's ``batch`` returns per server."""

    @property
    def server_id(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def quota_id(self) -> str | None: ...
    @property
    def error(self) -> HostwardError | None: ...


R = TypeVar("R", bound=ServerResult)
Out = TypeVar("Out", bound=ServerOutcome)
Batch = Callable[..., list[Out]]


def run_batch(
    ctx: ManagerContext,
    batch: Batch[Out],
    server_ids: list[str],
    fn: Callable[..., Any],
    *args: Any,
    actor: str,
    **kwargs: Any,
) -> list[Out]:
    """``batch(session, server_ids, fn, *args, now, settings, actor=actor, **kwargs)`` in one unit of work
    (the domain's ``batch`` gives each server its own savepoint)."""
    with ctx.uow() as session:
        return batch(session, server_ids, fn, *args, ctx.clock.now(), ctx.settings, actor=actor, **kwargs)


def server_results(outcomes: Iterable[ServerOutcome], model: type[R]) -> list[R]:
    """The API form of ``outcomes``, as ``model`` (each domain keeps its own schema name)."""
    return [
        model(
            server_id=o.server_id,
            ok=o.ok,
            quota_id=o.quota_id,
            error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
        )
        for o in outcomes
    ]


def check_quota_target(quota_id: str | None, server_ids: Sequence[str]) -> None:
    """A chosen quota binds one server: refuse it with a batch of several."""
    if quota_id is not None and len(server_ids) != 1:
        raise Invalid("quota_id can be given only with a single server")
