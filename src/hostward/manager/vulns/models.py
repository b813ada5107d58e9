"""Imported vulnerability data (feeds, advisories indexed by package) and findings per server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hostward.manager.db.base import Base, created_column, id_column

FINDING_STATES = ("unfixed", "ignored", "fixed")
# One-click fix progress (``fix_status``), beside the finding's state: fixing -> fixed / reboot / failed.
FIX_STATES = ("fixing", "fixed", "reboot", "failed")
VULN_SEVERITIES = ("critical", "high", "medium", "low", "unknown")
ADVISORY_KINDS = ("osv", "debian")


class VulnFeed(Base):
    """One import (a file, directory or archive): what it added and which entries were refused."""

    __tablename__ = "vuln_feeds"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16), default="upload")
    files: Mapped[int] = mapped_column(Integer, default=0)
    advisories: Mapped[int] = mapped_column(Integer, default=0)
    issue_count: Mapped[int] = mapped_column(Integer, default=0)
    issues: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    imported_by: Mapped[str] = mapped_column(String(64), default="")
    imported_at: Mapped[datetime] = created_column()


class VulnAdvisory(Base):
    """One advisory as imported: an OSV document, or one (source package, CVE) of the Debian tracker.

    Re-importing an advisory with the same ``key`` replaces it (feeds are refreshed by re-importing).
    """

    __tablename__ = "vuln_advisories"

    id: Mapped[str] = id_column()
    key: Mapped[str] = mapped_column(String(255), unique=True)
    feed_id: Mapped[str] = mapped_column(ForeignKey("vuln_feeds.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    primary_id: Mapped[str] = mapped_column(String(128), index=True)
    ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16), default="unknown")
    cvss_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class VulnAdvisoryPackage(Base):
    """(family, package name) an advisory is about: agents receive only advisories about their packages."""

    __tablename__ = "vuln_advisory_packages"
    __table_args__ = (Index("ix_vuln_advisory_packages_lookup", "family", "name"),)

    advisory_id: Mapped[str] = mapped_column(
        ForeignKey("vuln_advisories.id", ondelete="CASCADE"), primary_key=True
    )
    family: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)


class VulnFinding(Base):
    """One vulnerable package on one server (``key``: package + primary id + location, from the agent)."""

    __tablename__ = "vuln_findings"
    __table_args__ = (
        UniqueConstraint("server_id", "key_hash"),
        Index("ix_vuln_findings_vuln", "vuln_id", "status"),
        Index("ix_vuln_findings_server_status", "server_id", "status"),
    )

    id: Mapped[str] = id_column()
    server_id: Mapped[str] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    key_hash: Mapped[str] = mapped_column(String(64))
    vuln_id: Mapped[str] = mapped_column(String(128))
    ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    cves: Mapped[list[str]] = mapped_column(JSON, default=list)
    package: Mapped[str] = mapped_column(String(255))
    binaries: Mapped[list[str]] = mapped_column(JSON, default=list)
    installed_version: Mapped[str] = mapped_column(String(255), default="")
    fixed_version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    severity: Mapped[str] = mapped_column(String(16), default="unknown", index=True)
    cvss_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    cvss_vector: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ecosystem: Mapped[str] = mapped_column(String(64), default="")
    manager: Mapped[str] = mapped_column(String(16), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    fix_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    remediation: Mapped[str] = mapped_column(Text, default="")
    location: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="unfixed")
    whitelist_rule_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    handled_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    handled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    remark: Mapped[str] = mapped_column(Text, default="")
    first_seen: Mapped[datetime] = created_column()
    last_seen: Mapped[datetime] = created_column()
    fixed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_scan_id: Mapped[str] = mapped_column(String(64), default="")
    fix_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    fix_detail: Mapped[str] = mapped_column(Text, default="")
    fix_command_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    fix_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fix_requested_at: Mapped[datetime | None] = mapped_column(nullable=True)
    fix_finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class VulnWhitelistRule(Base):
    """Skip a vulnerability (any of a finding's ids) on every server (``server_ids`` None) or some."""

    __tablename__ = "vuln_whitelist"

    id: Mapped[str] = id_column()
    vuln_id: Mapped[str] = mapped_column(String(128), index=True)
    server_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    remark: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = created_column()
    hits: Mapped[int] = mapped_column(Integer, default=0)
