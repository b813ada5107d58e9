"""Types of the C chunk scanner (``src/native/logscan.c``); its pure-Python twin is
``LogParser._parse_chunk``."""

from collections.abc import Callable
from typing import Any

SKIPPED: int
UNMATCHED: int
SLOW: int

class Scanner:
    """The chunk regex rewritten for PCRE2 (``logscanner.scanner_regex``), compiled with the JIT, and its
    table: per Python group number an int code or ``(kind, service, pattern, counting, numbers)``."""

    jit: bool
    def __init__(self, pattern: str, captures: int, table: list[Any], match_limit: int = 0) -> None: ...
    def scan(
        self,
        text: str,
        out: list[Any],
        starts: list[int] | None,
        addresses: dict[str | None, str | None],
        minutes: dict[str, float | None],
        bsd: Callable[[str], float | None],
        iso: Callable[[str], float | None],
        slow: Callable[[str], Any],
    ) -> tuple[int, int, int, int] | None:
        """Append the rows of a run of lines to ``out`` (line starts to ``starts``); return (events, slow,
        skipped, unmatched), or None when the chunk is declined: nothing appended, nothing called."""
