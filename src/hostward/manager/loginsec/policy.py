"""The "login_security" policy: brute-force rule, lock time and the reference's options.

Only pydantic here: the policy registry imports this module while it builds its list.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

POLICY_KEY = "login_security"
MAX_LOCK_MINUTES = 43_200
# Editions whose agents block attackers; basic detects and alarms only.
BLOCKING_EDITIONS = ("enterprise", "premium", "wtp")


class LoginSecuritySettings(BaseModel):
    """Block a source after ``short_threshold`` failures in ``short_window_s`` or ``long_threshold`` in
    ``long_window_s`` (per service), for ``lock_minutes``; repeat offenders get longer locks when
    ``escalation`` is on."""

    model_config = ConfigDict(extra="forbid")

    short_threshold: int = Field(default=5, ge=1, le=1000, title="Failures in the short window")
    short_window_s: int = Field(default=30, ge=1, le=86_400, title="Short window (seconds)")
    long_threshold: int = Field(default=15, ge=1, le=10_000, title="Failures in the long window")
    long_window_s: int = Field(default=3600, ge=1, le=7 * 86_400, title="Long window (seconds)")
    lock_minutes: int = Field(default=720, ge=1, le=MAX_LOCK_MINUTES, title="Lock time (minutes)")
    escalation: bool = Field(
        default=True,
        title="Escalating lock time",
        description="each new block of a repeat offender doubles its lock time (up to 30 days)",
    )
    ipv6_prefix: int = Field(
        default=64,
        ge=32,
        le=128,
        title="IPv6 prefix length",
        description="IPv6 sources are blocked per prefix",
    )
    report_successful_logins: bool = Field(
        default=False,
        title="Report successful logins",
        description="raise a low-severity alarm (login_1001) for every successful login",
    )
    block_non_whitelisted: bool = Field(
        default=True,
        title="Block non-whitelisted attack IPs",
        description="block brute-force sources (enterprise, premium and WTP; basic only alarms)",
    )
    alarm_on_whitelisted_brute_force: bool = Field(
        default=True,
        title="Alarm on brute force from whitelisted IPs",
        description="whitelisted sources are never blocked; this still reports their brute force",
    )

    @model_validator(mode="after")
    def _windows(self) -> LoginSecuritySettings:
        if self.long_window_s < self.short_window_s:
            raise ValueError("long_window_s must be at least short_window_s")
        return self


def can_block(edition: str | None) -> bool:
    return edition in BLOCKING_EDITIONS
