"""Weak local passwords (checked on the host; only user names and reason categories leave it) and the
password complexity policy."""

from hostward.agent.weakpass.checker import (
    WEAK_PASSWORD,
    RateLimiter,
    WeakAccount,
    WeakpassConfig,
    WeakpassReport,
    check_accounts,
    check_shadow,
    weak_password_alarms,
)
from hostward.agent.weakpass.complexity import ComplexityItem, ComplexityReport, check_complexity
from hostward.agent.weakpass.shadow import ShadowAccount, ShadowRead, read_shadow
from hostward.agent.weakpass.wordlist import (
    MAX_CUSTOM_ENTRIES,
    WordlistError,
    custom_wordlist,
    default_wordlist,
    username_guesses,
)

__all__ = [
    "MAX_CUSTOM_ENTRIES",
    "WEAK_PASSWORD",
    "ComplexityItem",
    "ComplexityReport",
    "RateLimiter",
    "ShadowAccount",
    "ShadowRead",
    "WeakAccount",
    "WeakpassConfig",
    "WeakpassReport",
    "WordlistError",
    "check_accounts",
    "check_complexity",
    "check_shadow",
    "custom_wordlist",
    "default_wordlist",
    "read_shadow",
    "username_guesses",
    "weak_password_alarms",
]
