"""Read operator-imported vulnerability data into advisory rows: OSV JSON (files, directories, zip
archives, lists of records) and the Debian security tracker JSON.

The manager does not evaluate versions (the agent does, with each ecosystem's rules): it keeps every
advisory as published and indexes it by the (family, package name) pairs it is about, so an agent is
sent only the advisories about packages it has. Family and name are normalised exactly as the agent's
matcher looks them up (``agent.vulns.versions.family_of`` and ``agent.vulns.feeds.normalize_name``; a
test keeps the two in step). A malformed entry becomes an issue naming the file and the entry and is
skipped; everything else is imported.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

SEVERITY_BANDS = ("critical", "high", "medium", "low")
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
MAX_KEY = 255
MAX_ID = 128
MAX_WALK_ENTRIES = 200_000
_PEP503 = re.compile(r"[-_.]+")
_LABELS = {
    "critical": "critical",
    "important": "high",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unimportant": "low",
}


def family_of(ecosystem: str) -> str:
    """``Debian:12`` -> ``debian``; ``pip`` -> ``pypi`` (as the agent's matcher)."""
    base = ecosystem.split(":", 1)[0].strip().lower()
    return "pypi" if base == "pip" else base


def normalize_name(family: str, name: str) -> str:
    if family == "pypi":
        return _PEP503.sub("-", name).lower()
    return name.strip()


def band(score: float | None) -> str:
    """CVSS score -> priority: critical >= 9, high >= 7, medium >= 4, low below."""
    if score is None:
        return "unknown"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low"


@lru_cache(maxsize=65_536)
def cvss_score(kind: str, vector: str) -> float | None:
    """Base score of a CVSS v2/v3/v4 vector (None when it cannot be parsed)."""
    try:
        if kind == "CVSS_V3":
            from cvss import CVSS3

            return float(CVSS3(vector).base_score)
        if kind == "CVSS_V4":
            from cvss import CVSS4

            return float(CVSS4(vector).base_score)
        if kind == "CVSS_V2":
            from cvss import CVSS2

            return float(CVSS2(vector).base_score)
    except Exception:  # the cvss library raises several exception types for bad vectors
        return None
    return None


@dataclass(frozen=True)
class FeedIssue:
    file: str
    entry: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "entry": self.entry, "message": self.message}


@dataclass
class ParsedAdvisory:
    key: str
    kind: str
    primary_id: str
    ids: list[str]
    summary: str
    severity: str
    cvss_score: float | None
    doc: dict[str, Any]
    packages: set[tuple[str, str]] = field(default_factory=set)
    file: str = ""


class TooManyFiles(Exception):
    pass


def _feed_files(path: Path) -> list[Path]:
    """``*.json`` / ``*.json.gz`` below ``path`` (symlinks not followed; at most ``MAX_WALK_ENTRIES``)."""
    found: list[Path] = []
    visited = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames.sort()
        visited += len(dirnames) + len(filenames)
        if visited > MAX_WALK_ENTRIES:
            raise TooManyFiles(f"more than {MAX_WALK_ENTRIES} entries below {path}")
        found.extend(Path(dirpath, f) for f in sorted(filenames) if f.endswith((".json", ".json.gz")))
    return found


def _documents(path: Path, label: str) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for p in _feed_files(path):
            if p.is_file():
                yield from _documents(p, f"{label}/{p.relative_to(path)}")
        return
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            yield label, gz.read()
    elif head == b"PK\x03\x04":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if info.filename.endswith(".json"):
                    yield f"{label}!{info.filename}", zf.read(info)
                elif info.filename.endswith(".json.gz"):
                    yield f"{label}!{info.filename}", gzip.decompress(zf.read(info))
    else:
        yield label, path.read_bytes()


def read_path(path: Path, label: str | None = None) -> Iterator[ParsedAdvisory | FeedIssue]:
    """Every advisory (or issue) in a file, directory, ``.json.gz`` or zip archive, in file order."""
    name = label or path.name
    try:
        documents = _documents(path, name)
        for file, raw in documents:
            yield from read_document(file, raw)
    except (OSError, zipfile.BadZipFile, EOFError, TooManyFiles) as exc:
        yield FeedIssue(name, "file", f"cannot read: {exc}")


def read_document(file: str, raw: bytes) -> Iterator[ParsedAdvisory | FeedIssue]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        yield FeedIssue(file, "file", f"not valid JSON: {exc}")
        return
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            where = f"#{i}" + (f" ({item.get('id')})" if isinstance(item, dict) and item.get("id") else "")
            yield from osv_advisory(item, file, where)
    elif isinstance(doc, dict) and "id" in doc:
        yield from osv_advisory(doc, file, "advisory")
    elif isinstance(doc, dict) and _looks_like_tracker(doc):
        yield from tracker_advisories(doc, file)
    elif isinstance(doc, dict) and not doc:
        return
    else:
        yield FeedIssue(file, "file", "neither OSV nor Debian security tracker JSON")


def _looks_like_tracker(doc: dict[str, Any]) -> bool:
    for value in list(doc.values())[:20]:
        if isinstance(value, dict) and value:
            inner = next(iter(value.values()))
            if isinstance(inner, dict) and "releases" in inner:
                return True
    return False


def _osv_severity(doc: dict[str, Any]) -> tuple[str, float | None]:
    best: float | None = None
    for item in doc.get("severity") or []:
        if isinstance(item, dict) and isinstance(item.get("score"), str):
            score = cvss_score(str(item.get("type")), item["score"])
            if score is not None and (best is None or score > best):
                best = score
    if best is not None:
        return band(best), best
    labels = []
    for holder in [doc, *[a for a in doc.get("affected") or [] if isinstance(a, dict)]]:
        specific = holder.get("database_specific")
        if isinstance(specific, dict) and isinstance(specific.get("severity"), str):
            labels.append(_LABELS.get(specific["severity"].strip().lower(), "unknown"))
    known = [lb for lb in labels if lb in SEVERITY_BANDS]
    if known:
        return min(known, key=SEVERITY_BANDS.index), None
    return "unknown", None


def _check_affected(item: Any) -> str | None:
    """Why an OSV ``affected[]`` item is unusable, or None."""
    if not isinstance(item, dict):
        return "must be an object"
    pkg = item.get("package")
    if (
        not isinstance(pkg, dict)
        or not isinstance(pkg.get("ecosystem"), str)
        or not isinstance(pkg.get("name"), str)
    ):
        return "'package' needs string 'ecosystem' and 'name'"
    for r, rng in enumerate(item.get("ranges") or []):
        if not isinstance(rng, dict) or not isinstance(rng.get("events"), list):
            return f"ranges[{r}] needs a list of 'events'"
        for ev in rng["events"]:
            if not isinstance(ev, dict) or len(ev) != 1:
                return f"ranges[{r}]: an event has exactly one key"
            ((kind, value),) = ev.items()
            if kind not in EVENT_KINDS or not isinstance(value, str) or not value:
                return f"ranges[{r}]: invalid event {ev!r}"
    versions = item.get("versions") or []
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        return "'versions' must be a list of strings"
    return None


def osv_advisory(doc: Any, file: str, where: str) -> Iterator[ParsedAdvisory | FeedIssue]:
    """One OSV record; unusable ``affected`` items are reported and left out, the rest is kept."""
    if not isinstance(doc, dict):
        yield FeedIssue(file, where, "an OSV entry must be a JSON object")
        return
    adv_id = doc.get("id")
    if not isinstance(adv_id, str) or not adv_id or len(adv_id) > MAX_ID:
        yield FeedIssue(file, where, "missing or invalid 'id'")
        return
    if doc.get("withdrawn"):
        return
    affected = doc.get("affected", [])
    if not isinstance(affected, list):
        yield FeedIssue(file, adv_id, "'affected' must be a list")
        return
    aliases = doc.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        yield FeedIssue(file, adv_id, "'aliases' must be a list of strings; ignored")
        aliases = []
    kept: list[Any] = []
    packages: set[tuple[str, str]] = set()
    for n, item in enumerate(affected):
        problem = _check_affected(item)
        if problem is not None:
            yield FeedIssue(file, f"{adv_id} affected[{n}]", problem)
            continue
        kept.append(item)
        family = family_of(item["package"]["ecosystem"])
        name = normalize_name(family, item["package"]["name"])
        if family and name and len(family) <= 32 and len(name) <= 255:
            packages.add((family, name))
    clean = dict(doc)
    clean["affected"] = kept
    if not isinstance(doc.get("aliases") or [], list):
        clean["aliases"] = []
    severity, score = _osv_severity(clean)
    ids = list(dict.fromkeys([adv_id, *(a for a in aliases if len(a) <= MAX_ID)]))
    yield ParsedAdvisory(
        key=f"osv:{adv_id}"[:MAX_KEY],
        kind="osv",
        primary_id=adv_id,
        ids=ids,
        summary=str(doc.get("summary") or doc.get("details") or "")[:1000],
        severity=severity,
        cvss_score=score,
        doc=clean,
        packages=packages,
        file=file,
    )


def tracker_advisories(doc: dict[str, Any], file: str) -> Iterator[ParsedAdvisory | FeedIssue]:
    """The Debian security tracker: one advisory per (source package, CVE)."""
    for package, cves in doc.items():
        if not isinstance(cves, dict):
            yield FeedIssue(file, str(package), "must map CVE ids to objects")
            continue
        name = normalize_name("debian", str(package))
        for cve, info in cves.items():
            where = f"{package}/{cve}"
            if not isinstance(info, dict) or not isinstance(info.get("releases"), dict):
                yield FeedIssue(file, where, "needs a 'releases' object")
                continue
            if len(str(cve)) > MAX_ID or not name or len(name) > 255:
                yield FeedIssue(file, where, "package name or CVE id too long")
                continue
            urgencies = [
                _LABELS.get(str(rel.get("urgency") or "").rstrip("*").strip().lower(), "unknown")
                for rel in info["releases"].values()
                if isinstance(rel, dict)
            ]
            known = [u for u in urgencies if u in SEVERITY_BANDS]
            yield ParsedAdvisory(
                key=f"debian:{name}/{cve}"[:MAX_KEY],
                kind="debian",
                primary_id=str(cve),
                ids=[str(cve)],
                summary=str(info.get("description") or "")[:1000],
                severity=min(known, key=SEVERITY_BANDS.index) if known else "unknown",
                cvss_score=None,
                doc={"package": str(package), "cve": str(cve), "info": info},
                packages={("debian", name)},
                file=file,
            )
