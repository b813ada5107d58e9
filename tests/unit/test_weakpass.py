"""Weak-password checker on generated hashes of every scheme, the throttle, the custom list limit,
username-derived guesses and the password complexity policy on prepared trees."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hostward.agent.weakpass import (
    MAX_CUSTOM_ENTRIES,
    RateLimiter,
    ShadowAccount,
    WeakpassConfig,
    WordlistError,
    check_accounts,
    check_complexity,
    custom_wordlist,
    default_wordlist,
    read_shadow,
    username_guesses,
)
from hostward.agent.weakpass.cryptlib import make_hash, scheme_of

SCHEMES = [
    ("$y$", "yescrypt"),
    ("$6$", "sha512crypt"),
    ("$5$", "sha256crypt"),
    ("$1$", "md5crypt"),
    ("$2b$", "bcrypt"),
]
FAST = WeakpassConfig(max_hashes_per_second=None, workers=2)


@pytest.mark.parametrize(("prefix", "scheme"), SCHEMES)
def test_every_scheme_is_checked(prefix: str, scheme: str) -> None:
    accounts = [
        ShadowAccount("weak", make_hash("qwerty", prefix, 5 if prefix == "$2b$" else 0), "user"),
        ShadowAccount(
            "strong", make_hash("V3ry-l0ng-Unl1kely!", prefix, 5 if prefix == "$2b$" else 0), "user"
        ),
    ]
    assert scheme_of(accounts[0].hash) == scheme
    report = check_accounts(accounts, FAST, wordlist=("123456", "password", "qwerty"))
    assert [(w.username, w.reasons) for w in report.weak] == [("weak", ("common_password",))]
    assert report.complete and report.accounts_checked == 2


def test_empty_locked_and_unsupported_accounts() -> None:
    accounts = [
        ShadowAccount("nopass", "", "user"),
        ShadowAccount("locked", "!$6$salt$hash", "user"),
        ShadowAccount("disabled", "*", "system"),
        ShadowAccount("odd", "$unknown$xyz", "user"),
    ]
    report = check_accounts(accounts, FAST, wordlist=("123456",))
    assert [(w.username, w.reasons) for w in report.weak] == [("nopass", ("empty_password",))]
    assert report.locked == 2 and report.unsupported == ("odd",)


def test_shared_passwords_need_no_cross_cracking() -> None:
    same = make_hash("Not-In-Any-List-42", "$1$")
    accounts = [
        ShadowAccount("alice", make_hash("alice123", "$1$"), "user"),  # found: derived from the name
        ShadowAccount("bob", make_hash("alice123", "$1$"), "user"),  # alice's password, not bob-derived
        ShadowAccount("carol", make_hash("carol-unfound-77", "$1$"), "user"),
        ShadowAccount("dan", same, "user"),
        ShadowAccount("erin", same, "user"),  # identical hash string (copied shadow line)
    ]
    report = check_accounts(accounts, FAST, wordlist=())
    weak = {w.username: set(w.reasons) for w in report.weak}
    assert weak == {
        "alice": {"username_derived", "shared_password"},
        "bob": {"shared_password"},  # found by re-hashing alice's found password with bob's salt
        "dan": {"shared_password"},
        "erin": {"shared_password"},
    }  # carol's password is in no list and shared with nobody: not reported


def test_username_guesses() -> None:
    guesses = username_guesses("alice", (2024,))
    for g in ("alice", "Alice", "alice123", "Alice@123", "ecila", "@l1c3", "alice2024", "Alice@2024"):
        assert g in guesses
    assert len(guesses) == len(set(guesses))


def test_custom_list_limit(tmp_path: Path) -> None:
    assert custom_wordlist(["a", "a", "b"]) == ("a", "b")
    path = tmp_path / "list.txt"
    path.write_text("\n".join(f"pw{i}" for i in range(MAX_CUSTOM_ENTRIES + 1)))
    with pytest.raises(WordlistError, match=r"has 301 entries in .*list\.txt; at most 300"):
        custom_wordlist(path=path)
    with pytest.raises(WordlistError, match="cannot read"):
        custom_wordlist(path=tmp_path / "nope.txt")


def test_default_wordlist() -> None:
    words = default_wordlist()
    assert 3000 <= len(words) <= 10000
    assert words[:3] == ("123456", "password", "123456789")
    assert len(set(words)) == len(words)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def test_rate_limiter_spaces_acquisitions() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock, clock.wait)
    for _ in range(9):
        assert limiter.acquire()
    assert clock.now == pytest.approx(2.0)  # 9 slots at 4/s: the first is immediate
    cancelled = RateLimiter(1.0, clock, lambda s: True)
    assert cancelled.acquire() and not cancelled.acquire()


def test_throttled_run_respects_the_rate_and_the_budget() -> None:
    accounts = [ShadowAccount(f"u{i}", make_hash("Unguessable-9x!", "$1$"), "user") for i in range(2)]
    report = check_accounts(
        accounts,
        WeakpassConfig(max_hashes_per_second=40, max_seconds=0.5),
        wordlist=tuple(f"w{i}" for i in range(500)),
    )
    assert not report.complete
    assert report.hashes / report.seconds <= 40 * 1.3 + 4  # probes are not throttled
    cancel = threading.Event()
    cancel.set()
    assert not check_accounts(accounts, FAST, wordlist=("x",), cancel=cancel).complete


def test_read_shadow_account_types(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    )
    (tmp_path / "shadow").write_text(
        "root:$6$a$b:1:0:99999:7:::\nwww-data:*:1:0:99999:7:::\nalice:$y$j9T$a$b:1:0:99999:7:::\n"
    )
    read = read_shadow(tmp_path / "shadow")
    assert read.status == "ok"
    assert [(a.username, a.account_type) for a in read.accounts] == [
        ("root", "root"),
        ("www-data", "system"),
        ("alice", "user"),
    ]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        p = root / name.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return root


def test_complexity_without_a_quality_module(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "/etc/pam.d/common-password": "password [success=1 default=ignore] pam_unix.so yescrypt\n",
            "/etc/login.defs": "PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\n",
        },
    )
    report = check_complexity(tmp_path)
    items = {i.id: i.passed for i in report.items}
    assert report.module is None and not report.passed
    assert items == {
        "min_length": False,
        "uppercase": False,
        "lowercase": False,
        "digit": False,
        "special": False,
        "max_days": False,
        "min_days": False,
        "warn_age": True,
    }


def test_complexity_with_pwquality(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "/etc/pam.d/common-password": (
                "password requisite pam_pwquality.so retry=3 minlen=12\n"
                "password [success=1 default=ignore] pam_unix.so use_authtok yescrypt\n"
            ),
            "/etc/security/pwquality.conf": "minlen = 6\nucredit = -1\nlcredit = -1\ndcredit = -1\n",
            "/etc/security/pwquality.conf.d/90-special.conf": "ocredit = -1\n",
            "/etc/login.defs": "PASS_MAX_DAYS 90\nPASS_MIN_DAYS 1\nPASS_WARN_AGE 14\n",
        },
    )
    report = check_complexity(tmp_path)
    assert report.module == "pam_pwquality" and report.source == "/etc/pam.d/common-password"
    assert report.passed, report.to_dict()
    assert next(i for i in report.items if i.id == "min_length").value == "12"  # the PAM option wins


def test_complexity_minclass_four(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "/etc/pam.d/system-auth": "password requisite pam_pwquality.so minclass=4 minlen=8\n",
            "/etc/login.defs": "PASS_MAX_DAYS 60\nPASS_MIN_DAYS 1\n",
        },
    )
    assert check_complexity(tmp_path).passed
