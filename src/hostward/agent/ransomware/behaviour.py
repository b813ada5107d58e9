"""The behaviour rule (pure): one process touching too many protected files too fast."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RateRule:
    """Fires once per process when it renames or rewrites more than ``n`` distinct files in ``window_s``."""

    n: int
    window_s: float
    _hits: dict[int, deque[tuple[float, str]]] = field(default_factory=dict)
    _fired: set[int] = field(default_factory=set)

    def feed(self, pid: int, path: str, ts: float) -> list[str] | None:
        """Record one write/rename; returns the paths in the window when the rule fires (once per pid)."""
        if pid in self._fired:
            return None
        q = self._hits.setdefault(pid, deque())
        q.append((ts, path))
        while q and ts - q[0][0] > self.window_s:
            q.popleft()
        paths = list(dict.fromkeys(p for _, p in q))
        if len(paths) > self.n:
            self._fired.add(pid)
            del self._hits[pid]
            return paths
        return None

    def forget(self, pid: int) -> None:
        self._hits.pop(pid, None)
        self._fired.discard(pid)
