"""The policies a group can hold: key, title, editions, and a pydantic model for their settings.

Capabilities add their policy here (one ``PolicySpec`` each); presets are built from this list, and
settings sent by operators are validated against the model, so a bad value is a clear 422.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hostward.core.errors import Invalid
from hostward.manager.baseline.policy import (
    CONFIG_CHECK_EDITIONS,
    CONFIG_CHECK_POLICY,
    WEAK_PASSWORD_POLICY,
    ConfigCheckSettings,
    WeakPasswordSettings,
)
from hostward.manager.fim.policy import FIM_EDITIONS, FileProtectionSettings
from hostward.manager.fim.policy import POLICY_KEY as FILE_PROTECTION
from hostward.manager.loginsec.policy import POLICY_KEY as LOGIN_SECURITY
from hostward.manager.loginsec.policy import LoginSecuritySettings
from hostward.manager.malware import policy as threats

EDITION_ORDER = ("basic", "enterprise", "premium", "wtp")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AssetDiscoverySettings(_Settings):
    """How often the agent refreshes each fingerprint category between scans (reference cadences)."""

    ports_interval_s: int = Field(default=30, ge=10, le=86400, title="Open ports refresh (seconds)")
    accounts_interval_s: int = Field(default=3600, ge=60, le=7 * 86400, title="Accounts refresh (seconds)")
    processes_interval_s: int = Field(default=3600, ge=60, le=7 * 86400, title="Processes refresh (seconds)")
    autostart_interval_s: int = Field(
        default=3600, ge=60, le=7 * 86400, title="Auto-start items refresh (seconds)"
    )
    software_interval_s: int = Field(
        default=86400, ge=600, le=30 * 86400, title="Installed software refresh (seconds)"
    )
    account_alarms: bool = Field(
        default=True,
        title="Account alarms",
        description="alarm on new accounts (user_1001) and new uid-0 accounts (user_1002)",
    )


@dataclass(frozen=True)
class PolicySpec:
    key: str
    title: str
    editions: tuple[str, ...]
    settings_model: type[BaseModel]
    description: str = ""
    default_enabled: dict[str, bool] = field(default_factory=dict)

    def enabled_by_default(self, edition: str) -> bool:
        return self.default_enabled.get(edition, True)

    def default_settings(self) -> dict[str, Any]:
        return self.settings_model().model_dump(mode="json")

    def validate(self, settings: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.settings_model(**settings).model_dump(mode="json")
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            raise Invalid(f"policy {self.key}: {loc}: {err['msg']}") from exc


_SPECS: list[PolicySpec] = [
    PolicySpec(
        key="asset_discovery",
        title="Asset discovery",
        editions=EDITION_ORDER,
        settings_model=AssetDiscoverySettings,
        description="Collects accounts, ports, processes, software, auto-start items and kernel modules; "
        "alarms on new accounts (user_1001) and new uid-0 accounts (user_1002).",
    ),
    PolicySpec(
        key=FILE_PROTECTION,
        title="File protection",
        editions=FIM_EDITIONS,
        settings_model=FileProtectionSettings,
        description="File integrity monitoring: baseline of important files and monitored directories, "
        "real-time changes with the writing process, daily check; alarms fileprotect_0002 (important "
        "file) and fileprotect_0004 (file/directory), package updates recorded without alarm.",
    ),
    PolicySpec(
        key=LOGIN_SECURITY,
        title="Login security check",
        editions=EDITION_ORDER,
        settings_model=LoginSecuritySettings,
        description="Brute-force detection on SSH, FTP and MySQL logs (login_0001, login_0002 when a success "
        "follows) with firewall blocking of the source (enterprise, premium, WTP; basic only alarms); "
        "successful-login reports (login_1001).",
    ),
    PolicySpec(
        key=WEAK_PASSWORD_POLICY,
        title="Weak password detection",
        editions=EDITION_ORDER,
        settings_model=WeakPasswordSettings,
        description="Scans check local password hashes against common, custom and username-derived "
        "passwords on the host (throttled; only user names reach the manager); alarm login_1003.",
    ),
    PolicySpec(
        key=CONFIG_CHECK_POLICY,
        title="Configuration check",
        editions=CONFIG_CHECK_EDITIONS,
        settings_model=ConfigCheckSettings,
        description="Scans run the baseline checks (SSH, password policy, file permissions, kernel "
        "network parameters, unnecessary services, nginx) and report unsafe settings.",
    ),
    *(PolicySpec(**spec) for spec in threats.POLICIES),
]

POLICY_SPECS: dict[str, PolicySpec] = {}


def register(spec: PolicySpec) -> PolicySpec:
    """Add a policy; duplicate keys are a programming error."""
    if spec.key in POLICY_SPECS:
        raise ValueError(f"policy {spec.key!r} registered twice")
    POLICY_SPECS[spec.key] = spec
    return spec


for _spec in _SPECS:
    register(_spec)


def specs_for(edition: str) -> list[PolicySpec]:
    return [s for s in POLICY_SPECS.values() if edition in s.editions]
