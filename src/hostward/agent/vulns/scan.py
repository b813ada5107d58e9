"""One vulnerability scan of a host: inventory + imported feeds -> findings (what the agent reports)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostward.agent.vulns.feeds import FeedIssue, VulnDB, load_feeds
from hostward.agent.vulns.inventory import DEFAULT_SEARCH_DIRS, Distro, installed_packages
from hostward.agent.vulns.matcher import MatchResult, match


@dataclass
class VulnScan:
    distro: Distro | None
    packages: int
    result: MatchResult
    issues: list[FeedIssue]
    advisories: int
    inventory_seconds: float
    load_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "distro": None
            if self.distro is None
            else f"{self.distro.family} {self.distro.version_id}".strip(),
            "packages": self.packages,
            "advisories": self.advisories,
            "counts": self.result.counts(),
            "suppressed_backports": self.result.suppressed_backports,
            "timings": {
                "inventory_s": round(self.inventory_seconds, 3),
                "load_s": round(self.load_seconds, 3),
                "match_s": round(self.result.seconds, 3),
            },
            "findings": [f.to_dict() for f in self.result.findings],
            "feed_issues": [i.to_dict() for i in self.issues],
        }


def scan_host(
    feeds: Sequence[Path] | VulnDB,
    root: Path = Path("/"),
    *,
    languages: bool = True,
    search_dirs: tuple[str, ...] = DEFAULT_SEARCH_DIRS,
) -> VulnScan:
    """Inventory ``root``, load ``feeds`` (or use an already loaded VulnDB) and match."""
    t0 = time.perf_counter()
    db = feeds if isinstance(feeds, VulnDB) else load_feeds(feeds)
    t1 = time.perf_counter()
    distro, packages = installed_packages(root, languages=languages, search_dirs=search_dirs)
    t2 = time.perf_counter()
    result = match(packages, db, distro)
    return VulnScan(distro, len(packages), result, list(db.issues), db.advisories, t2 - t1, t1 - t0)
