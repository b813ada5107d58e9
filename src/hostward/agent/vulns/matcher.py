"""Match installed packages against a :class:`VulnDB` (pure: no I/O).

Rules that keep the results trustworthy:

- OS packages are matched only against their own distribution's data (``Debian`` / ``Debian:12`` /
  the tracker's ``bookworm``), by *source* package, never against upstream version numbers: Debian's
  ``3.0.11-1~deb12u2`` carries fixes that upstream shipped in 3.0.13.
- Backports: when distribution data for a vulnerability says a fix at or below the installed version
  exists (or that the release was never affected), the vulnerability is not reported for that package,
  whatever another record says.
- One finding per package and vulnerability: advisories that share an id or alias (DSA-5532 and
  CVE-2023-5678) are merged; the fixed version is the highest one any of them needs.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from hostward.agent.vulns.feeds import Affected, VulnDB
from hostward.agent.vulns.inventory import Distro, InstalledPackage
from hostward.agent.vulns.severity import UNKNOWN, Severity, worse
from hostward.agent.vulns.versions import version_key


@dataclass
class Finding:
    package: str  # what advisories call it (dpkg: source package)
    installed_version: str
    fixed_version: str | None
    ids: tuple[str, ...]
    severity: Severity
    ecosystem: str
    manager: str
    binaries: tuple[str, ...] = ()
    summary: str = ""
    fix_command: str | None = None
    remediation: str = ""
    location: str = ""
    sources: tuple[str, ...] = ()

    @property
    def cves(self) -> tuple[str, ...]:
        return tuple(i for i in self.ids if i.startswith("CVE-"))

    @property
    def key(self) -> str:
        """Stable identity for the manager (package + primary id + location)."""
        return f"{self.ecosystem}:{self.package}:{self.ids[0]}:{self.location}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "binaries": list(self.binaries),
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "ids": list(self.ids),
            "cves": list(self.cves),
            "severity": self.severity.band,
            "cvss_score": self.severity.score,
            "cvss_vector": self.severity.vector,
            "ecosystem": self.ecosystem,
            "manager": self.manager,
            "summary": self.summary,
            "fix_command": self.fix_command,
            "remediation": self.remediation,
            "location": self.location,
            "sources": list(self.sources),
        }


@dataclass
class MatchResult:
    findings: list[Finding]
    packages_checked: int
    seconds: float
    suppressed_backports: int = 0

    def counts(self) -> dict[str, int]:
        out = {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}
        for f in self.findings:
            out[f.severity.band] += 1
        return out


@dataclass
class _Group:
    ecosystem: str
    name: str
    version: str
    manager: str
    location: str
    binaries: list[str] = field(default_factory=list)


def _groups(packages: list[InstalledPackage]) -> list[_Group]:
    by_key: dict[tuple[str, str, str, str, str], _Group] = {}
    for p in packages:
        key = (p.ecosystem, p.name, p.version, p.manager, p.location)
        g = by_key.get(key)
        if g is None:
            g = by_key[key] = _Group(p.ecosystem, p.name, p.version, p.manager, p.location)
        if p.binary and p.binary not in g.binaries:
            g.binaries.append(p.binary)
    return list(by_key.values())


def _order_ids(ids: set[str], primary: str) -> tuple[str, ...]:
    cves = sorted(i for i in ids if i.startswith("CVE-"))
    others = sorted(i for i in ids if not i.startswith("CVE-") and i != primary)
    first = [primary] if primary in ids else []
    return tuple(dict.fromkeys(first + cves + others))


def fix_command(manager: str, names: list[str], fixed: str | None, location: str = "") -> str | None:
    if manager == "dpkg":
        return "apt-get install --only-upgrade " + " ".join(shlex.quote(n) for n in sorted(names))
    if manager == "rpm":
        return "dnf upgrade " + " ".join(shlex.quote(n) for n in sorted(names))
    if manager == "pip":
        spec = f"{names[0]}>={fixed}" if fixed else names[0]
        return f"pip install --upgrade {shlex.quote(spec)}"
    if manager == "npm":
        project = location.rsplit("/node_modules/", 1)[0] if "/node_modules/" in location else location
        spec = f"{names[0]}@{fixed}" if fixed else f"{names[0]}@latest"
        return f"npm install --prefix {shlex.quote(project)} {shlex.quote(spec)}"
    return None


def _remediation(g: _Group, fixed: str | None) -> str:
    target = f"version {fixed} or later" if fixed else "a version with the fix (none is known yet)"
    if g.manager == "jar":
        return f"Replace {g.location} ({g.name} {g.version}) with {target}."
    what = ", ".join(g.binaries) if g.binaries else g.name
    return f"Upgrade {what} to {target}."


def match(packages: list[InstalledPackage], db: VulnDB, distro: Distro | None = None) -> MatchResult:
    """Findings for ``packages``; ``distro`` restricts release-specific OS advisories to this host's."""
    started = time.perf_counter()
    findings: list[Finding] = []
    suppressed = 0
    groups = _groups(packages)
    for g in groups:
        family = g.ecosystem.lower()
        candidates = db.candidates(family, g.name)
        if not candidates:
            continue
        raw: list[tuple[Affected, str | None]] = []
        cleared: set[str] = set()
        for entry in candidates:
            if entry.release and distro is not None and not distro.release_matches(entry.release):
                continue
            verdict = entry.evaluate(g.version)
            if verdict.affected:
                raw.append((entry, verdict.fixed))
            elif verdict.cleared and entry.distro_data:
                cleared |= entry.advisory.ids
        suppressed += sum(1 for entry, _ in raw if entry.advisory.ids & cleared)
        merged = _merge(family, raw, cleared)
        for ids, entries, fixed in merged:
            findings.append(_finding(g, ids, entries, fixed, db))
    findings.sort(key=lambda f: (-_RANK[f.severity.band], -(f.severity.score or 0), f.package, f.ids))
    return MatchResult(findings, len(groups), time.perf_counter() - started, suppressed)


_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "unknown": 0}


def _merge(
    family: str, raw: list[tuple[Affected, str | None]], cleared: set[str]
) -> list[tuple[set[str], list[Affected], str | None]]:
    """Merge records sharing an id; drop the ones distribution data says are fixed (backports)."""
    clusters: list[tuple[set[str], list[Affected], str | None]] = []
    for entry, fixed in raw:
        if entry.advisory.ids & cleared:
            continue
        ids = set(entry.advisory.ids)
        hit = [c for c in clusters if c[0] & ids]
        merged_ids, merged_entries, merged_fix = ids, [entry], fixed
        for c in hit:
            clusters.remove(c)
            merged_ids |= c[0]
            merged_entries += c[1]
            merged_fix = _max_fix(family, merged_fix, c[2])
        clusters.append((merged_ids, merged_entries, merged_fix))
    return [c for c in clusters if not (c[0] & cleared)]


def _max_fix(family: str, a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if version_key(family, a) >= version_key(family, b) else b


def _finding(g: _Group, ids: set[str], entries: list[Affected], fixed: str | None, db: VulnDB) -> Finding:
    severity: Severity = UNKNOWN
    for e in entries:
        severity = worse(severity, e.advisory.severity)
    if severity.score is None:
        for i in ids:  # a CVSS score published by another imported advisory for the same CVE
            other = db.severity_by_id.get(i)
            if other is not None and other.score is not None:
                severity = worse(severity, other) if severity.band != "unknown" else other
    primary = sorted(entries, key=lambda e: (not e.distro_data, e.advisory.id))[0].advisory.id
    names = g.binaries or [g.name]
    return Finding(
        package=g.name,
        installed_version=g.version,
        fixed_version=fixed,
        ids=_order_ids(ids, primary),
        severity=severity,
        ecosystem=g.ecosystem,
        manager=g.manager,
        binaries=tuple(g.binaries),
        summary=next((e.advisory.summary for e in entries if e.advisory.summary), ""),
        fix_command=fix_command(g.manager, names, fixed, g.location),
        remediation=_remediation(g, fixed),
        location=g.location,
        sources=tuple(sorted({e.advisory.source for e in entries})),
    )
