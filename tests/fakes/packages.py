"""A package index whose database "moves" on demand: a package manager run that starts and ends while a
FIM scan is hashing (too short to ever be seen holding its lock)."""

from __future__ import annotations

from typing import Literal

from hostward.agent.fim.pkgdb import Owner


class FlickeringPackages:
    """Never busy; ``activity()`` changes every time ``run_during_next_scan`` is armed and sampled."""

    manager: Literal["dpkg", "rpm"] = "dpkg"

    def __init__(self) -> None:
        self.generation = 0
        self.armed = 0

    def run_during_next_scan(self) -> None:
        """The next before/after pair of ``activity()`` samples differs (once)."""
        self.armed = 2

    def activity(self) -> object:
        if self.armed:
            self.armed -= 1
            if self.armed == 0:
                self.generation += 1
        return self.generation

    def busy(self) -> bool:
        return False

    def refresh(self) -> None:
        return None

    def owner(self, path: bytes) -> Owner | None:
        return None

    def dropped(self, path: bytes) -> str | None:
        return None
