"""Weak-password check cost: 20 accounts x 10,000 candidate passwords, per hash scheme, and throttling.

A temporary shadow file is generated with real hashes (libxcrypt): 18 strong accounts and 2 weak ones
whose passwords are the *last* dictionary entries (worst case: every candidate is tried). Three parts:

1. cost per hash for yescrypt, SHA-512, SHA-256, MD5 and bcrypt (measured on a sample);
2. the complete 20 x 10,000 run, for real, with ``--scheme`` (default md5crypt: yescrypt's 200,000
   hashes take hours of CPU by design) and ``--workers`` threads; checks both weak accounts are found;
   the time the same run would take with each other scheme is projected from part 1;
3. a throttled run (``--rate`` hashes/s, yescrypt accounts, ``--throttle-seconds``) reporting the
   achieved rate and the CPU it used, i.e. what the agent's budget sees.

    .venv/bin/python bench/weakpass.py [--accounts 20] [--passwords 10000] [--scheme md5] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hostward.agent.weakpass import WeakpassConfig, check_shadow, default_wordlist
from hostward.agent.weakpass.cryptlib import crypt, make_hash

SCHEMES = {"yescrypt": "$y$", "sha512": "$6$", "sha256": "$5$", "md5": "$1$", "bcrypt": "$2b$"}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wordlist(n: int) -> tuple[str, ...]:
    base = list(default_wordlist())
    i = 0
    while len(base) < n:
        base.append(f"filler-{i:05d}")
        i += 1
    return tuple(base[:n])


def write_shadow(path: Path, accounts: int, prefix: str, weak_passwords: list[str]) -> None:
    lines = []
    for i in range(accounts):
        password = weak_passwords[i] if i < len(weak_passwords) else f"Strong-{i}-Xq9!vR2#"
        lines.append(f"user{i:02d}:{make_hash(password, prefix)}:19700:0:99999:7:::")
    path.write_text("\n".join(lines) + "\n")


def per_hash_ms(prefix: str, samples: int) -> float:
    setting = make_hash("x", prefix)
    t0 = time.perf_counter()
    for i in range(samples):
        crypt(f"candidate{i}", setting)
    return (time.perf_counter() - t0) / samples * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--passwords", type=int, default=10_000)
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="md5")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--throttle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    words = wordlist(args.passwords)
    hashes_full = args.accounts * (len(words) + 40)  # + username-derived guesses per account

    print("1) cost per hash (one thread)")
    cost = {name: per_hash_ms(prefix, args.samples) for name, prefix in SCHEMES.items()}
    for name, ms in cost.items():
        projected = hashes_full * ms / 1000 / args.workers
        print(
            f"   {name:<9} {ms:8.2f} ms/hash  {1000 / ms:8.1f} hashes/s/core  "
            f"full {args.accounts}x{len(words)} run ~ {projected:,.0f} s with {args.workers} workers"
        )

    with tempfile.TemporaryDirectory(prefix="hw-weakpass-") as tmp:
        shadow = Path(tmp) / "shadow"
        write_shadow(shadow, args.accounts, SCHEMES[args.scheme], [words[-1], words[-2]])
        print(
            f"2) full run: {args.accounts} accounts x {len(words)} passwords, "
            f"{args.scheme}, {args.workers} workers"
        )
        c0, t0 = cpu(), time.perf_counter()
        report = check_shadow(
            shadow, WeakpassConfig(max_hashes_per_second=None, workers=args.workers), wordlist=words
        )
        wall, used = time.perf_counter() - t0, cpu() - c0
        found = sorted(w.username for w in report.weak)
        print(
            f"   {report.hashes:,} hashes in {wall:.1f} s "
            f"({report.hashes / wall:,.0f} hashes/s, CPU {used:.1f} s)"
            f"  weak found: {found}  complete: {report.complete}"
        )
        ok = found == ["user00", "user01"] and report.complete

        write_shadow(shadow, 4, SCHEMES["yescrypt"], [])
        print(
            f"3) throttled: {args.rate:g} hashes/s for {args.throttle_seconds:g} s, "
            f"yescrypt, {args.workers} workers"
        )
        c0, t0 = cpu(), time.perf_counter()
        report = check_shadow(
            shadow,
            WeakpassConfig(
                max_hashes_per_second=args.rate, workers=args.workers, max_seconds=args.throttle_seconds
            ),
            wordlist=words,
        )
        wall, used = time.perf_counter() - t0, cpu() - c0
        rate = (report.hashes - report.accounts_checked) / wall  # the scheme probes are not throttled
        print(
            f"   {report.hashes} hashes in {wall:.1f} s -> {rate:.1f} hashes/s (limit {args.rate:g}); "
            f"CPU {used:.1f} s = {100 * used / wall:.0f}% of one core; complete: {report.complete}"
        )
        ok = ok and rate <= args.rate * 1.1
    print(
        f"SUMMARY weakpass accounts={args.accounts} passwords={len(words)} scheme={args.scheme} "
        f"yescrypt_ms={cost['yescrypt']:.1f} sha512_ms={cost['sha512']:.2f} throttled_rate={rate:.1f} "
        f"result={'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
