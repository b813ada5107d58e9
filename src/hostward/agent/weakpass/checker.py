"""Weak-password check of local accounts: dictionary + username-derived guesses + shared passwords.

Hashes and passwords never leave this module: the report carries user names, account types and reason
categories only (``empty_password``, ``username_derived``, ``custom_list``, ``common_password``,
``shared_password``). The work is throttled (at most ``max_hashes_per_second`` crypt calls, token
bucket) because yescrypt is slow by design (~75 ms per hash on one core) and the agent has a CPU budget;
``max_seconds`` bounds a run, which then reports ``complete: false``.

Order: each account's username-derived guesses, then the custom list, then the shared dictionary tried
round-robin (every account gets "123456" before anyone gets the 50th entry), so a bounded run finds the
likeliest weak passwords first. "Shared" is detected only for passwords found (re-hashed with each other
account's salt) and for identical hash strings; it never tries to crack one account from another.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hostward.agent.weakpass.cryptlib import CryptUnavailable, crypt, scheme_of
from hostward.agent.weakpass.shadow import ShadowAccount, read_shadow
from hostward.agent.weakpass.wordlist import default_wordlist, username_guesses
from hostward.core.ids import new_id
from hostward.wire import AlarmEvent, alarm_class

WEAK_PASSWORD = "login_1003"
REASONS = ("empty_password", "username_derived", "custom_list", "common_password", "shared_password")
DEFAULT_MAX_HASHES_PER_SECOND = 10.0


@dataclass
class WeakpassConfig:
    max_hashes_per_second: float | None = DEFAULT_MAX_HASHES_PER_SECOND  # None = unthrottled
    workers: int = 1
    custom: tuple[str, ...] = ()
    use_default_list: bool = True
    max_seconds: float | None = None
    years: tuple[int, ...] | None = None  # for username+year guesses; default: this year and the 2 before


@dataclass(frozen=True)
class WeakAccount:
    username: str
    account_type: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"username": self.username, "account_type": self.account_type, "reasons": list(self.reasons)}


@dataclass
class WeakpassReport:
    status: str  # ok | unreadable | missing | error | unavailable
    detail: str
    accounts_total: int = 0
    accounts_checked: int = 0
    weak: list[WeakAccount] = field(default_factory=list)
    hashes: int = 0
    seconds: float = 0.0
    complete: bool = True
    locked: int = 0
    unsupported: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "detail": self.detail,
            "accounts_total": self.accounts_total,
            "accounts_checked": self.accounts_checked,
            "weak": [w.to_dict() for w in self.weak],
            "hashes": self.hashes,
            "seconds": round(self.seconds, 3),
            "hashes_per_second": round(self.hashes / self.seconds, 1) if self.seconds > 0 else None,
            "complete": self.complete,
            "locked": self.locked,
            "unsupported": list(self.unsupported),
        }


class RateLimiter:
    """At most ``rate`` acquisitions per second across threads (no bursts beyond one)."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.interval = 0.0 if not rate else 1.0 / rate
        self.clock = clock
        self._wait = wait or (lambda seconds: threading.Event().wait(seconds))
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Block until the next slot; False when the wait function reports cancellation."""
        if self.interval <= 0:
            return True
        with self._lock:
            now = self.clock()
            start = max(self._next, now)
            self._next = start + self.interval
        delay = start - now
        if delay > 0:
            return not self._wait(delay)
        return True


@dataclass
class _State:
    accounts: list[ShadowAccount]
    found: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (password, reason)
    hashes: int = 0
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _tasks(
    state: _State,
    indexes: list[int],
    custom: tuple[str, ...],
    common: tuple[str, ...],
    years: tuple[int, ...],
) -> Iterator[tuple[int, str, str]]:
    for i in indexes:
        for guess in username_guesses(state.accounts[i].username, years):
            yield i, guess, "username_derived"
    for reason, words in (("custom_list", custom), ("common_password", common)):
        for word in words:
            for i in indexes:
                yield i, word, reason


def check_accounts(
    accounts: tuple[ShadowAccount, ...] | list[ShadowAccount],
    config: WeakpassConfig | None = None,
    *,
    wordlist: tuple[str, ...] | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WeakpassReport:
    """Check already-read accounts; see the module docstring for the order and the throttle."""
    cfg = config or WeakpassConfig()
    started = clock()
    cancel = cancel or threading.Event()
    years = cfg.years or tuple(range(datetime.now().year - 2, datetime.now().year + 1))
    common = (wordlist if wordlist is not None else default_wordlist()) if cfg.use_default_list else ()
    limiter = RateLimiter(cfg.max_hashes_per_second, clock, cancel.wait)
    deadline = None if cfg.max_seconds is None else started + cfg.max_seconds
    state = _State(list(accounts))
    reasons: dict[int, list[str]] = {}
    locked = 0
    unsupported: list[str] = []
    indexes: list[int] = []
    try:
        for i, acc in enumerate(state.accounts):
            if acc.hash == "":
                reasons[i] = ["empty_password"]
            elif not acc.has_password:
                locked += 1
            elif crypt("", acc.hash) is None:
                unsupported.append(acc.username)
            else:
                indexes.append(i)
    except CryptUnavailable as exc:
        return WeakpassReport("unavailable", str(exc), accounts_total=len(state.accounts))
    state.hashes += len(indexes)  # the scheme probes above

    tasks = _tasks(state, indexes, cfg.custom, common, years)
    task_lock = threading.Lock()

    def worker() -> None:
        while True:
            if cancel.is_set() or (deadline is not None and clock() >= deadline):
                state.stopped = True
                return
            with task_lock:
                task = next(tasks, None)
                while task is not None and task[0] in state.found:
                    task = next(tasks, None)
            if task is None:
                return
            if not limiter.acquire():
                state.stopped = True
                return
            i, candidate, reason = task
            acc = state.accounts[i]
            hashed = crypt(candidate, acc.hash)
            with state.lock:
                state.hashes += 1
                if hashed is not None and hmac.compare_digest(hashed, acc.hash) and i not in state.found:
                    state.found[i] = (candidate, reason)

    threads = [
        threading.Thread(target=worker, name=f"weakpass-{n}", daemon=True)
        for n in range(max(1, cfg.workers) - 1)
    ]
    for t in threads:
        t.start()
    worker()
    for t in threads:
        t.join()

    for i, (_, reason) in state.found.items():
        reasons.setdefault(i, []).append(reason)
    _shared(state, indexes, reasons, limiter, cancel)
    weak = [
        WeakAccount(state.accounts[i].username, state.accounts[i].account_type, tuple(dict.fromkeys(r)))
        for i, r in sorted(reasons.items())
    ]
    complete = not state.stopped
    detail = f"{len(indexes)} accounts checked, {len(weak)} weak" + (
        "" if complete else " (stopped early: budget)"
    )
    return WeakpassReport(
        status="ok",
        detail=detail,
        accounts_total=len(state.accounts),
        accounts_checked=len(indexes),
        weak=weak,
        hashes=state.hashes,
        seconds=clock() - started,
        complete=complete,
        locked=locked,
        unsupported=tuple(unsupported),
    )


def _shared(
    state: _State,
    indexes: list[int],
    reasons: dict[int, list[str]],
    limiter: RateLimiter,
    cancel: threading.Event,
) -> None:
    """Accounts with identical hashes, or whose hash matches a password found for another account."""
    by_hash: dict[str, list[int]] = {}
    for i in indexes:
        by_hash.setdefault(state.accounts[i].hash, []).append(i)
    for same in by_hash.values():
        if len(same) > 1:
            for i in same:
                reasons.setdefault(i, []).append("shared_password")
    for i, (password, _) in list(state.found.items()):
        for j in indexes:
            if j == i:
                continue
            other = state.found.get(j)
            if other is not None:
                if hmac.compare_digest(other[0].encode(), password.encode()):
                    reasons.setdefault(i, []).append("shared_password")
                    reasons.setdefault(j, []).append("shared_password")
                continue
            if cancel.is_set() or not limiter.acquire():
                return
            state.hashes += 1
            hashed = crypt(password, state.accounts[j].hash)
            if hashed is not None and hmac.compare_digest(hashed, state.accounts[j].hash):
                reasons.setdefault(i, []).append("shared_password")
                reasons.setdefault(j, []).append("shared_password")


def check_shadow(
    shadow: Path = Path("/etc/shadow"),
    config: WeakpassConfig | None = None,
    *,
    passwd: Path | None = None,
    root: Path = Path("/"),
    wordlist: tuple[str, ...] | None = None,
    cancel: threading.Event | None = None,
) -> WeakpassReport:
    """Read ``shadow`` and check it; an unreadable or missing file is a status, not an exception."""
    read = read_shadow(shadow, passwd, root)
    if read.status != "ok":
        return WeakpassReport(read.status, read.detail, complete=False)
    return check_accounts(read.accounts, config, wordlist=wordlist, cancel=cancel)


def weak_password_alarms(report: WeakpassReport, now: datetime) -> list[AlarmEvent]:
    """One ``login_1003`` alarm per weak account: user name, account type and reason categories only."""
    severity = alarm_class(WEAK_PASSWORD).severity
    alarms = []
    for w in report.weak:
        reason = w.reasons[0]
        alarms.append(
            AlarmEvent(
                key=new_id(),
                occurred_at=now,
                event_class=WEAK_PASSWORD,
                severity=severity,
                title=f"Weak password: {w.username} ({reason.replace('_', ' ')})"[:512],
                fingerprint=f"{WEAK_PASSWORD}:{w.username}"[:256],
                evidence={"username": w.username, "account_type": w.account_type, "reasons": list(w.reasons)},
            )
        )
    return alarms


def hash_scheme_counts(accounts: list[ShadowAccount]) -> dict[str, int]:
    """How many accounts use each hash scheme (for status output; no hash leaves the host)."""
    out: dict[str, int] = {}
    for a in accounts:
        if a.has_password:
            out[scheme_of(a.hash)] = out.get(scheme_of(a.hash), 0) + 1
    return out
