"""Vulnerability data the operator imports: OSV JSON (files, directories, zip archives) and the Debian
security tracker JSON. Entries are indexed by (ecosystem family, package name) so matching a host's
packages touches only the advisories about packages it has.

A malformed entry becomes a :class:`FeedIssue` naming the file and the entry (advisory id, or
``package/CVE`` for the tracker) and is skipped; everything else in the file is imported.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostward.agent.vulns.severity import UNKNOWN, Severity, from_osv, from_urgency, score_vector, worse
from hostward.agent.vulns.versions import DEB_FAMILIES, RPM_FAMILIES, family_of, version_key

OS_FAMILIES = DEB_FAMILIES | RPM_FAMILIES
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
_PEP503 = re.compile(r"[-_.]+")
_MIN: tuple[int] = (0,)


@dataclass(frozen=True)
class FeedIssue:
    file: str
    entry: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "entry": self.entry, "message": self.message}


@dataclass(frozen=True)
class Advisory:
    id: str
    ids: frozenset[str]  # the id and its aliases (CVE ids, DSA/GHSA ids)
    summary: str
    severity: Severity
    source: str


@dataclass
class Verdict:
    affected: bool
    fixed: str | None = None  # the first fixed version above the installed one, when known
    cleared: bool = False  # the data says a fix at or below the installed version exists


@dataclass
class Affected:
    """One package's affected versions in one advisory (an OSV ``affected[]`` item, or a tracker row)."""

    advisory: Advisory
    family: str
    release: str | None
    name: str
    ranges: tuple[tuple[tuple[str, str], ...], ...]
    versions: frozenset[str] = frozenset()
    not_affected: bool = False  # tracker "resolved" with fixed_version 0: never affected here
    _sorted: list[list[tuple[str, str, Any]]] | None = field(default=None, repr=False)

    @property
    def distro_data(self) -> bool:
        return self.family in OS_FAMILIES

    def _ranges_sorted(self) -> list[list[tuple[str, str, Any]]]:
        if self._sorted is None:
            out = []
            for events in self.ranges:
                keyed = [
                    (
                        kind,
                        v,
                        _MIN if (kind == "introduced" and v == "0") else (1, version_key(self.family, v)),
                    )
                    for kind, v in events
                ]
                keyed.sort(key=lambda e: e[2])
                out.append(keyed)
            self._sorted = out
        return self._sorted

    def evaluate(self, installed: str) -> Verdict:
        """OSV semantics: within a range, the last event at or below the version decides."""
        if self.not_affected:
            return Verdict(False, cleared=True)
        if installed in self.versions:
            return Verdict(True, self._next_fix(installed))
        kv = (1, version_key(self.family, installed))
        cleared = False
        for events in self._ranges_sorted():
            status = False
            fixed_at_or_below = False
            for kind, _, k in events:
                if kind == "introduced":
                    if k <= kv:
                        status, fixed_at_or_below = True, False
                elif kind == "fixed":
                    if k <= kv:
                        status, fixed_at_or_below = False, True
                elif kind == "last_affected" and k < kv:
                    status, fixed_at_or_below = False, True
            if status:
                fix = next((v for kind, v, k in events if kind == "fixed" and k > kv), None)
                return Verdict(True, fix)
            cleared = cleared or fixed_at_or_below
        return Verdict(False, cleared=cleared)

    def _next_fix(self, installed: str) -> str | None:
        kv = (1, version_key(self.family, installed))
        fixes = [
            (k, v) for events in self._ranges_sorted() for kind, v, k in events if kind == "fixed" and k > kv
        ]
        return min(fixes)[1] if fixes else None


def normalize_name(family: str, name: str) -> str:
    if family == "pypi":
        return _PEP503.sub("-", name).lower()
    return name.strip()


@dataclass
class VulnDB:
    """Imported advisories, indexed by (family, package name)."""

    index: dict[tuple[str, str], list[Affected]] = field(default_factory=dict)
    issues: list[FeedIssue] = field(default_factory=list)
    severity_by_id: dict[str, Severity] = field(default_factory=dict)
    advisories: int = 0
    files: int = 0

    def candidates(self, family: str, name: str) -> list[Affected]:
        return self.index.get((family, normalize_name(family, name)), [])

    def _add(self, entry: Affected) -> None:
        self.index.setdefault((entry.family, normalize_name(entry.family, entry.name)), []).append(entry)

    # ---- OSV -------------------------------------------------------------------------------------

    def add_osv(self, doc: Any, file: str, position: str = "") -> None:
        """One OSV advisory document."""
        where = position or "advisory"
        if not isinstance(doc, dict):
            self.issues.append(FeedIssue(file, where, "an OSV entry must be a JSON object"))
            return
        adv_id = doc.get("id")
        if not isinstance(adv_id, str) or not adv_id:
            self.issues.append(FeedIssue(file, where, "missing or invalid 'id'"))
            return
        if doc.get("withdrawn"):
            return
        affected = doc.get("affected", [])
        if not isinstance(affected, list):
            self.issues.append(FeedIssue(file, adv_id, "'affected' must be a list"))
            return
        aliases = doc.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            self.issues.append(FeedIssue(file, adv_id, "'aliases' must be a list of strings; ignored"))
            aliases = []
        for item in doc.get("severity") or []:
            if (
                isinstance(item, dict)
                and isinstance(item.get("score"), str)
                and item.get("type")
                in (
                    "CVSS_V2",
                    "CVSS_V3",
                    "CVSS_V4",
                )
            ):
                try:
                    score_vector(str(item["type"]), item["score"])
                except ValueError as exc:
                    self.issues.append(FeedIssue(file, adv_id, f"{exc}; ignored"))
        labels = (
            [(doc.get("database_specific") or {}).get("severity")]
            if isinstance(doc.get("database_specific"), dict)
            else []
        )
        severity = from_osv(doc.get("severity"), labels)
        advisory = Advisory(
            id=adv_id,
            ids=frozenset([adv_id, *aliases]),
            summary=str(doc.get("summary") or doc.get("details") or "")[:500],
            severity=severity,
            source=file,
        )
        if severity.score is not None:
            for i in advisory.ids:
                self.severity_by_id[i] = worse(self.severity_by_id.get(i, UNKNOWN), severity)
        self.advisories += 1
        for n, item in enumerate(affected):
            entry = self._osv_affected(item, advisory, file, f"{adv_id} affected[{n}]")
            if entry is not None:
                self._add(entry)

    def _osv_affected(self, item: Any, advisory: Advisory, file: str, where: str) -> Affected | None:
        if not isinstance(item, dict):
            self.issues.append(FeedIssue(file, where, "must be an object"))
            return None
        pkg = item.get("package")
        if (
            not isinstance(pkg, dict)
            or not isinstance(pkg.get("ecosystem"), str)
            or not isinstance(pkg.get("name"), str)
        ):
            self.issues.append(FeedIssue(file, where, "'package' needs string 'ecosystem' and 'name'"))
            return None
        ecosystem: str = pkg["ecosystem"]
        family = family_of(ecosystem)
        release = ecosystem.split(":", 1)[1] if ":" in ecosystem else None
        ranges: list[tuple[tuple[str, str], ...]] = []
        for r, rng in enumerate(item.get("ranges") or []):
            if not isinstance(rng, dict) or not isinstance(rng.get("events"), list):
                self.issues.append(FeedIssue(file, where, f"ranges[{r}] needs a list of 'events'"))
                return None
            if rng.get("type") == "GIT":
                continue  # commit ranges cannot be evaluated against an installed version
            events: list[tuple[str, str]] = []
            for ev in rng["events"]:
                if not isinstance(ev, dict) or len(ev) != 1:
                    self.issues.append(FeedIssue(file, where, f"ranges[{r}]: an event has exactly one key"))
                    return None
                ((kind, value),) = ev.items()
                if kind not in EVENT_KINDS or not isinstance(value, str) or not value:
                    self.issues.append(FeedIssue(file, where, f"ranges[{r}]: invalid event {ev!r}"))
                    return None
                if kind != "limit":
                    events.append((kind, value))
            if events:
                ranges.append(tuple(events))
        versions = item.get("versions") or []
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            self.issues.append(FeedIssue(file, where, "'versions' must be a list of strings"))
            return None
        if not ranges and not versions:
            return None
        sev_labels = (
            [(item.get("database_specific") or {}).get("severity")]
            if isinstance(item.get("database_specific"), dict)
            else []
        )
        adv = advisory
        if item.get("severity") or sev_labels:
            own = from_osv(item.get("severity"), sev_labels)
            if own is not UNKNOWN:
                adv = Advisory(
                    advisory.id, advisory.ids, advisory.summary, worse(advisory.severity, own), file
                )
        return Affected(adv, family, release, pkg["name"], tuple(ranges), frozenset(versions))

    # ---- Debian security tracker ------------------------------------------------------------------

    def add_debian_tracker(self, doc: dict[str, Any], file: str) -> None:
        """``{source package: {CVE: {description, releases: {codename: {status, fixed_version,
        urgency}}}}}`` as published by the Debian security tracker."""
        for package, cves in doc.items():
            if not isinstance(cves, dict):
                self.issues.append(FeedIssue(file, str(package), "must map CVE ids to objects"))
                continue
            for cve, info in cves.items():
                where = f"{package}/{cve}"
                if not isinstance(info, dict) or not isinstance(info.get("releases"), dict):
                    self.issues.append(FeedIssue(file, where, "needs a 'releases' object"))
                    continue
                self.advisories += 1
                for codename, rel in info["releases"].items():
                    entry = self._tracker_release(package, cve, info, codename, rel, file, where)
                    if entry is not None:
                        self._add(entry)

    def _tracker_release(
        self, package: str, cve: str, info: dict[str, Any], codename: str, rel: Any, file: str, where: str
    ) -> Affected | None:
        if not isinstance(rel, dict) or not isinstance(rel.get("status"), str):
            self.issues.append(FeedIssue(file, f"{where}/{codename}", "needs a string 'status'"))
            return None
        status = rel["status"]
        urgency = str(rel.get("urgency") or "")
        fixed = rel.get("fixed_version")
        advisory = Advisory(
            id=cve,
            ids=frozenset([cve]),
            summary=str(info.get("description") or "")[:500],
            severity=from_urgency(urgency),
            source=file,
        )
        if status == "resolved":
            if not isinstance(fixed, str) or not fixed:
                self.issues.append(FeedIssue(file, f"{where}/{codename}", "resolved without a fixed_version"))
                return None
            if fixed == "0":
                return Affected(advisory, "debian", codename, package, (), not_affected=True)
            return Affected(advisory, "debian", codename, package, ((("introduced", "0"), ("fixed", fixed)),))
        if status == "open":
            if urgency.rstrip("*").strip() == "unimportant":
                return None  # Debian's own verdict: no security impact worth a fix
            return Affected(advisory, "debian", codename, package, ((("introduced", "0"),),))
        return None  # undetermined: nothing to say


# ---- loading -------------------------------------------------------------------------------------


def _json_items(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for p in sorted(path.rglob("*.json")):
            if p.is_file():
                yield str(p), p.read_bytes()
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.endswith(".json") and not info.is_dir():
                    yield f"{path}!{info.filename}", zf.read(info)
    else:
        yield str(path), path.read_bytes()


def _looks_like_tracker(doc: dict[str, Any]) -> bool:
    for value in list(doc.values())[:20]:
        if isinstance(value, dict) and value:
            inner = next(iter(value.values()))
            if isinstance(inner, dict) and "releases" in inner:
                return True
    return False


def load_feed(db: VulnDB, path: Path) -> None:
    """Import one file, directory (``*.json``, recursively) or OSV zip archive into ``db``."""
    try:
        items = list(_json_items(path))
    except (OSError, zipfile.BadZipFile) as exc:
        db.issues.append(FeedIssue(str(path), "file", f"cannot read: {exc}"))
        return
    for name, raw in items:
        db.files += 1
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            db.issues.append(FeedIssue(name, "file", f"not valid JSON: {exc}"))
            continue
        if isinstance(doc, list):
            for i, item in enumerate(doc):
                db.add_osv(item, name, f"#{i}" + (f" ({item.get('id')})" if isinstance(item, dict) else ""))
        elif isinstance(doc, dict) and "id" in doc:
            db.add_osv(doc, name)
        elif isinstance(doc, dict) and _looks_like_tracker(doc):
            db.add_debian_tracker(doc, name)
        elif isinstance(doc, dict) and not doc:
            continue
        else:
            db.issues.append(FeedIssue(name, "file", "neither OSV nor Debian security tracker JSON"))


def load_feeds(paths: Iterable[Path]) -> VulnDB:
    db = VulnDB()
    for p in paths:
        load_feed(db, p)
    return db
