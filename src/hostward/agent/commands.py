"""Command dispatch by kind. Handlers return a result now, or ``None`` when they post it later (scans)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from hostward.wire import Command, CommandResult

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], CommandResult | None]


class DuplicateCommandKind(ValueError):
    pass


def failed(detail: str, **data: object) -> CommandResult:
    return CommandResult(status="failed", detail=detail[:4096], data=dict(data))


def succeeded(detail: str = "", **data: object) -> CommandResult:
    return CommandResult(status="succeeded", detail=detail[:4096], data=dict(data))


class CommandDispatcher:
    """Handlers by command kind; later capabilities register theirs (unblock_ip, isolate_file, ...)."""

    def __init__(self, remember: int = 1024) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def register(self, kind: str, handler: CommandHandler) -> None:
        if kind in self._handlers:
            raise DuplicateCommandKind(f"command kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def kinds(self) -> list[str]:
        return list(self._handlers)

    def already_seen(self, command_id: str) -> bool:
        """True for a command delivered twice (a retried long poll): it must run only once."""
        if command_id in self._seen:
            return True
        self._seen[command_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        return False

    def dispatch(self, command: Command) -> CommandResult | None:
        handler = self._handlers.get(command.kind)
        if handler is None:
            return failed(f"unsupported command: {command.kind}")
        try:
            return handler(command)
        except Exception as exc:
            log.exception("command %s (%s) failed", command.id, command.kind)
            return failed(f"{type(exc).__name__}: {exc}")
