"""Imports every ORM model so that metadata (and Alembic) sees all tables."""

from hostward.manager.agentlink.models import AgentCommand, AgentCredential, EnrollmentToken, IngestedEvent
from hostward.manager.alarms.models import Alarm, AlarmWhitelistRule
from hostward.manager.audit.models import AuditRecord
from hostward.manager.auth.models import ApiToken, LoginAttempt, User
from hostward.manager.baseline.models import BaselineCheckResult, WeakPassword
from hostward.manager.db.base import Base
from hostward.manager.fim.models import FimChange
from hostward.manager.loginsec.models import (
    BlockedIp,
    LearnedLoginLocation,
    LoginWhitelistEntry,
    SshIpWhitelistEntry,
)
from hostward.manager.malware.models import IsolatedFile
from hostward.manager.policies.models import Policy, PolicyGroup
from hostward.manager.quotas.models import Quota
from hostward.manager.ransomware.models import RansomwarePolicy, RansomwareServer, RansomwareSnapshot
from hostward.manager.regions.models import Region
from hostward.manager.risk.models import RiskServerState, ScoreSnapshot
from hostward.manager.scans.models import Scan
from hostward.manager.scheduler.models import Job, PeriodicTask
from hostward.manager.servers.models import AssetSnapshotRow, Server, ServerGroup
from hostward.manager.settings_store.models import GlobalSetting
from hostward.manager.vulns.models import (
    VulnAdvisory,
    VulnAdvisoryPackage,
    VulnFeed,
    VulnFinding,
    VulnWhitelistRule,
)
from hostward.manager.wtp.models import WtpEvent, WtpServer

__all__ = [
    "AgentCommand",
    "AgentCredential",
    "Alarm",
    "AlarmWhitelistRule",
    "ApiToken",
    "AssetSnapshotRow",
    "AuditRecord",
    "Base",
    "BaselineCheckResult",
    "BlockedIp",
    "EnrollmentToken",
    "FimChange",
    "GlobalSetting",
    "IngestedEvent",
    "IsolatedFile",
    "Job",
    "LearnedLoginLocation",
    "LoginAttempt",
    "LoginWhitelistEntry",
    "PeriodicTask",
    "Policy",
    "PolicyGroup",
    "Quota",
    "RansomwarePolicy",
    "RansomwareServer",
    "RansomwareSnapshot",
    "Region",
    "RiskServerState",
    "Scan",
    "ScoreSnapshot",
    "Server",
    "ServerGroup",
    "SshIpWhitelistEntry",
    "User",
    "VulnAdvisory",
    "VulnAdvisoryPackage",
    "VulnFeed",
    "VulnFinding",
    "VulnWhitelistRule",
    "WeakPassword",
    "WtpEvent",
    "WtpServer",
]
