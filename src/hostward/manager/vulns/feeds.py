"""Vulnerability feeds on the manager: import into advisory rows, list, delete, deliver to agents.

Storage scales with the public feeds (tens of thousands of advisories): each advisory is one row with
its document, plus one index row per (family, package name) it is about. An agent asks with its own
package names and receives only the matching advisories, streamed in chunks (``advisory_lines``), so
neither the manager nor the agent ever holds the whole feed for a scan.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import Text, cast, delete, func, insert, select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid, NotFound
from hostward.core.ids import new_id
from hostward.manager.audit import service as audit
from hostward.manager.vulns import feedfile
from hostward.manager.vulns.models import VulnAdvisory, VulnAdvisoryPackage, VulnFeed

BATCH = 1000
LOOKUP_CHUNK = 500
MAX_STORED_ISSUES = 200
MAX_PACKAGES_PER_REQUEST = 100_000


def import_path(
    session: Session, path: Path, *, name: str, source: str, actor: str, now: datetime
) -> VulnFeed:
    """Import a file, directory or archive; malformed entries are listed on the feed, the rest stored.

    An advisory already stored under the same key (same OSV id, same tracker package/CVE) is replaced;
    feeds left without advisories by the replacement are removed. Invalid when nothing could be imported.
    """
    started = time.perf_counter()
    feed = VulnFeed(name=name[:255] or path.name[:255], source=source, imported_by=actor, imported_at=now)
    session.add(feed)
    session.flush()
    issues: list[dict[str, str]] = []
    issue_count = 0
    stored = 0
    files: set[str] = set()
    batch: dict[str, feedfile.ParsedAdvisory] = {}
    for item in feedfile.read_path(path, name or path.name):
        if isinstance(item, feedfile.FeedIssue):
            issue_count += 1
            files.add(item.file)
            if len(issues) < MAX_STORED_ISSUES:
                issues.append(item.to_dict())
            continue
        files.add(item.file)
        batch[item.key] = item  # the same key twice in one import: the later record wins
        if len(batch) >= BATCH:
            stored += _store(session, feed.id, batch)
            batch = {}
    if batch:
        stored += _store(session, feed.id, batch)
    if stored == 0:
        session.delete(feed)
        session.flush()
        first = "; ".join(f"{i['file']}: {i['entry']}: {i['message']}" for i in issues[:3])
        raise Invalid(
            f"no advisory could be imported from {name or path.name}" + (f" ({first})" if first else ""),
            code="empty_feed",
        )
    feed.advisories = session.scalar(select(func.count()).where(VulnAdvisory.feed_id == feed.id)) or 0
    feed.files = len(files)
    feed.issues = issues
    feed.issue_count = issue_count
    feed.seconds = round(time.perf_counter() - started, 3)
    emptied = session.scalars(
        select(VulnFeed.id).where(
            VulnFeed.id != feed.id,
            ~select(VulnAdvisory.id).where(VulnAdvisory.feed_id == VulnFeed.id).exists(),
        )
    ).all()
    if emptied:
        session.execute(delete(VulnFeed).where(VulnFeed.id.in_(emptied)))
    audit.record(
        session,
        actor,
        "import_vuln_feed",
        target_type="vuln_feed",
        target_id=feed.id,
        target_name=feed.name,
        advisories=feed.advisories,
        issues=issue_count,
        source=source,
    )
    return feed


def _store(session: Session, feed_id: str, batch: dict[str, feedfile.ParsedAdvisory]) -> int:
    keys = list(batch)
    # The package index rows go with their advisory (ON DELETE CASCADE).
    session.execute(
        delete(VulnAdvisory).where(VulnAdvisory.key.in_(keys)).execution_options(synchronize_session=False)
    )
    rows: list[dict[str, object]] = []
    index: list[dict[str, str]] = []
    for adv in batch.values():
        adv_id = new_id()
        rows.append(
            {
                "id": adv_id,
                "key": adv.key,
                "feed_id": feed_id,
                "kind": adv.kind,
                "primary_id": adv.primary_id,
                "ids": adv.ids,
                "summary": adv.summary,
                "severity": adv.severity,
                "cvss_score": adv.cvss_score,
                "doc": adv.doc,
            }
        )
        index.extend({"advisory_id": adv_id, "family": f, "name": n} for f, n in sorted(adv.packages))
    session.execute(insert(VulnAdvisory), rows)
    if index:
        session.execute(insert(VulnAdvisoryPackage), index)
    return len(rows)


def list_feeds(session: Session) -> list[VulnFeed]:
    return list(session.scalars(select(VulnFeed).order_by(VulnFeed.imported_at.desc())))


def delete_feed(session: Session, feed_id: str, *, actor: str) -> None:
    feed = session.get(VulnFeed, feed_id)
    if feed is None:
        raise NotFound(f"vulnerability feed {feed_id} not found")
    session.execute(delete(VulnAdvisory).where(VulnAdvisory.feed_id == feed.id))
    session.delete(feed)
    audit.record(
        session, actor, "delete_vuln_feed", target_type="vuln_feed", target_id=feed_id, target_name=feed.name
    )


def advisory_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(VulnAdvisory)) or 0


def advisory_ids_for(session: Session, packages: Iterable[tuple[str, str]]) -> list[str]:
    """Ids of the advisories about any of ``packages`` ((family, normalised name) pairs)."""
    by_family: dict[str, set[str]] = defaultdict(set)
    for count, (family, name) in enumerate(packages, 1):
        if count > MAX_PACKAGES_PER_REQUEST:
            raise Invalid(f"at most {MAX_PACKAGES_PER_REQUEST} packages per request")
        by_family[family].add(name)
    found: set[str] = set()
    for family, names in by_family.items():
        ordered = sorted(names)
        for start in range(0, len(ordered), LOOKUP_CHUNK):
            chunk = ordered[start : start + LOOKUP_CHUNK]
            found.update(
                session.scalars(
                    select(VulnAdvisoryPackage.advisory_id)
                    .where(VulnAdvisoryPackage.family == family, VulnAdvisoryPackage.name.in_(chunk))
                    .distinct()
                )
            )
    return sorted(found)


def advisory_lines(session: Session, ids: list[str]) -> Iterator[bytes]:
    """NDJSON lines ``{"kind", "feed", "doc"}`` for ``ids``, read ``LOOKUP_CHUNK`` rows at a time."""
    names: dict[str, str] = {fid: name for fid, name in session.execute(select(VulnFeed.id, VulnFeed.name))}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = ids[start : start + LOOKUP_CHUNK]
        # The stored JSON text goes out as it is (no parse and re-encode per advisory).
        rows = session.execute(
            select(VulnAdvisory.kind, VulnAdvisory.feed_id, cast(VulnAdvisory.doc, Text)).where(
                VulnAdvisory.id.in_(chunk)
            )
        )
        for kind, feed_id, doc in rows:
            head = json.dumps({"kind": kind, "feed": names.get(feed_id, "manager")}, ensure_ascii=False)
            yield (head[:-1] + ',"doc":' + doc + "}\n").encode()
