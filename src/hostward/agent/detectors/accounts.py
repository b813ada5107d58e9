"""Account changes between two collections: ``user_1001`` account change, ``user_1002`` unsafe account.

Pure logic: the runtime collects accounts and keeps the baseline on disk; this module only compares.
The first collection (no baseline) raises nothing: it *is* the baseline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.core.ids import new_id
from hostward.wire import Account, AlarmEvent, DetectorHealth, PolicyBundle, alarm_class

ACCOUNT_CHANGE = "user_1001"
UNSAFE_ACCOUNT = "user_1002"
POLICY_KEY = "asset_discovery"
DEFAULT_ACCOUNTS_INTERVAL_S = 3600
_COMPARED = ("uid", "gid", "home", "shell", "groups")


def _evidence(account: Account, change: str, **extra: Any) -> dict[str, Any]:
    return {
        "username": account.name,
        "uid": account.uid,
        "gid": account.gid,
        "home": account.home,
        "shell": account.shell,
        "groups": list(account.groups),
        "login_allowed": account.login_allowed,
        "change": change,
        **extra,
    }


def _alarm(code: str, fingerprint: str, title: str, evidence: dict[str, Any], now: datetime) -> AlarmEvent:
    return AlarmEvent(
        key=new_id(),
        occurred_at=now,
        event_class=code,
        severity=alarm_class(code).severity,
        title=title[:512],
        fingerprint=fingerprint[:256],
        evidence=evidence,
    )


def diff_accounts(previous: list[Account] | None, current: list[Account], now: datetime) -> list[AlarmEvent]:
    """Alarms for accounts added, deleted or modified between ``previous`` and ``current``.

    A new uid-0 account other than ``root``, or an existing account whose uid became 0, is also an
    unsafe-account alarm (high): uid 0 is root whatever the name says.
    """
    if previous is None:
        return []
    before = {a.name: a for a in previous}
    after = {a.name: a for a in current}
    alarms: list[AlarmEvent] = []
    for name, acc in after.items():
        old = before.get(name)
        if old is None:
            alarms.append(
                _alarm(
                    ACCOUNT_CHANGE,
                    f"{ACCOUNT_CHANGE}:{name}:{acc.uid}:added",
                    f"Account added: {name} (uid {acc.uid})",
                    _evidence(acc, "added"),
                    now,
                )
            )
            if acc.uid == 0 and name != "root":
                alarms.append(
                    _alarm(
                        UNSAFE_ACCOUNT,
                        f"{UNSAFE_ACCOUNT}:{name}:{acc.uid}",
                        f"New account with uid 0: {name}",
                        _evidence(acc, "added", reason="new account with uid 0"),
                        now,
                    )
                )
            continue
        changes = {
            field: {"old": getattr(old, field), "new": getattr(acc, field)}
            for field in _COMPARED
            if getattr(old, field) != getattr(acc, field)
        }
        if not changes:
            continue
        alarms.append(
            _alarm(
                ACCOUNT_CHANGE,
                f"{ACCOUNT_CHANGE}:{name}:{acc.uid}:modified",
                f"Account modified: {name} ({', '.join(changes)})",
                _evidence(acc, "modified", changes=changes),
                now,
            )
        )
        if acc.uid == 0 and old.uid != 0:
            alarms.append(
                _alarm(
                    UNSAFE_ACCOUNT,
                    f"{UNSAFE_ACCOUNT}:{name}:{acc.uid}",
                    f"Account uid changed to 0: {name} (was {old.uid})",
                    _evidence(acc, "modified", reason="uid changed to 0", old_uid=old.uid),
                    now,
                )
            )
    for name, old in before.items():
        if name not in after:
            alarms.append(
                _alarm(
                    ACCOUNT_CHANGE,
                    f"{ACCOUNT_CHANGE}:{name}:{old.uid}:deleted",
                    f"Account deleted: {name} (uid {old.uid})",
                    _evidence(old, "deleted"),
                    now,
                )
            )
    return alarms


def accounts_interval(bundle: PolicyBundle | None, default: int = DEFAULT_ACCOUNTS_INTERVAL_S) -> int:
    """``asset_discovery.settings.accounts_interval_s`` from the bundle, else ``default`` (min 10 s)."""
    if bundle is not None:
        policy = bundle.policies.get(POLICY_KEY)
        if policy is not None:
            value = policy.settings.get("accounts_interval_s")
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return max(10, int(value))
    return default


class AccountsDetector:
    """Keeps the accounts baseline in memory and diffs each new collection against it.

    Alarms are raised only while protection is on (the bundle says so) and the ``asset_discovery``
    policy is not switched off; otherwise the baseline is still updated, so that switching protection
    on later does not report changes made while the server was unprotected.
    """

    name = "accounts"
    inputs = frozenset({"accounts"})
    heavy = False

    def __init__(self) -> None:
        self.baseline: list[Account] | None = None
        self.alarming = False
        self.interval_s = DEFAULT_ACCOUNTS_INTERVAL_S
        self._observations = 0
        self._alarms = 0
        self._suppressed = 0

    def prime(self, baseline: list[Account] | None) -> None:
        """Load the baseline saved by the previous run (None: the next collection becomes the baseline)."""
        self.baseline = list(baseline) if baseline is not None else None

    def configure(self, bundle: PolicyBundle | None) -> None:
        policy = bundle.policies.get(POLICY_KEY) if bundle is not None else None
        wanted = policy is None or (
            policy.enabled and policy.settings.get("account_alarms", True) is not False
        )
        self.alarming = bool(bundle is not None and bundle.protection and wanted)
        self.interval_s = accounts_interval(bundle)

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        current: list[Account] = list(observation.data)
        alarms = diff_accounts(self.baseline, current, now)
        self.baseline = current
        self._observations += 1
        if not self.alarming:
            self._suppressed += len(alarms)
            return []
        self._alarms += len(alarms)
        return list(alarms)

    def health(self) -> DetectorHealth:
        reason = "" if self.alarming else "protection off: learning the baseline only"
        return DetectorHealth(
            name=self.name,
            status="running" if self.alarming else "disabled",
            reason=reason,
            counters={
                "observations": self._observations,
                "alarms": self._alarms,
                "suppressed": self._suppressed,
                "accounts": len(self.baseline or []),
            },
        )

    def stop(self) -> None:
        """Nothing to release: the runtime persists the baseline."""
