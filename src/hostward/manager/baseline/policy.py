"""The ``weak_password_detection`` and ``configuration_check`` policies.

Only pydantic here: the policy registry imports this module while it builds its list.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

WEAK_PASSWORD_POLICY = "weak_password_detection"
CONFIG_CHECK_POLICY = "configuration_check"
# Unsafe-configuration checks are an enterprise feature; weak passwords and password complexity are in
# every edition (reference §5.3).
CONFIG_CHECK_EDITIONS = ("enterprise", "premium", "wtp")
MAX_CUSTOM_PASSWORDS = 300


class WeakPasswordSettings(BaseModel):
    """Local password hashes are checked on the host, throttled; only user names leave it."""

    model_config = ConfigDict(extra="forbid")

    custom_passwords: list[str] = Field(
        default_factory=list,
        max_length=MAX_CUSTOM_PASSWORDS,
        title="Custom weak passwords",
        description="your own list (at most 300), checked before the shared dictionary",
    )
    max_hashes_per_second: float = Field(
        default=10.0, gt=0, le=1000, title="Hashes per second", description="throttle (CPU budget)"
    )
    max_seconds: int = Field(
        default=1200,
        ge=10,
        le=24 * 3600,
        title="Longest run (seconds)",
        description="a longer check stops and reports itself incomplete",
    )

    @field_validator("custom_passwords")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        out = []
        for word in value:
            if "\n" in word or "\r" in word or len(word) > 128:
                raise ValueError("custom passwords: one line each, at most 128 characters")
            if word:
                out.append(word)
        return list(dict.fromkeys(out))


class ConfigCheckSettings(BaseModel):
    """Baseline (unsafe configuration) checks run by scans with the shipped policies."""

    model_config = ConfigDict(extra="forbid")

    command_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        title="Command timeout (seconds)",
        description="for checks running commands",
    )
