"""Vulnerability matching: installed packages against imported OSV / Debian security tracker data."""

from hostward.agent.vulns.feeds import FeedIssue, VulnDB, load_feed, load_feeds
from hostward.agent.vulns.inventory import Distro, InstalledPackage, installed_packages, read_distro
from hostward.agent.vulns.matcher import Finding, MatchResult, match
from hostward.agent.vulns.scan import VulnScan, scan_host

__all__ = [
    "Distro",
    "FeedIssue",
    "Finding",
    "InstalledPackage",
    "MatchResult",
    "VulnDB",
    "VulnScan",
    "installed_packages",
    "load_feed",
    "load_feeds",
    "match",
    "read_distro",
    "scan_host",
]
