"""Vulnerability matching speed: 3,000 installed packages against 50,000 OSV-shaped advisories.

Generates the advisories in memory (Debian:12 source packages with Debian-style fixed versions, PyPI
and npm packages with semver-ish ranges, several advisories per package name, most about packages that
are not installed, as in the real feeds), loads them into a VulnDB (timed separately) and times
``match``. Target (issue 6): matching < 2 s.

    .venv/bin/python bench/vulns_match.py [--advisories 50000] [--packages 3000] [--strict]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hostward.agent.vulns import Distro, InstalledPackage, VulnDB, match
from hostward.agent.vulns.versions import version_key

TARGET_S = 2.0


def _deb_version(rnd: random.Random) -> str:
    upstream = f"{rnd.randint(1, 9)}.{rnd.randint(0, 30)}.{rnd.randint(0, 20)}"
    return f"{rnd.randint(0, 1)}:{upstream}-{rnd.randint(1, 5)}+deb12u{rnd.randint(1, 9)}"


def _sem(rnd: random.Random) -> str:
    return f"{rnd.randint(0, 5)}.{rnd.randint(0, 20)}.{rnd.randint(0, 20)}"


def generate(n_adv: int, n_pkg: int, seed: int = 6) -> tuple[list[dict], list[InstalledPackage]]:
    rnd = random.Random(seed)
    ecos = [("Debian", 0.8), ("PyPI", 0.13), ("npm", 0.07)]
    packages: list[InstalledPackage] = []
    for i in range(n_pkg):
        r = rnd.random()
        eco = "Debian" if r < ecos[0][1] else "PyPI" if r < ecos[0][1] + ecos[1][1] else "npm"
        name = f"{eco.lower()}-pkg{i}"
        if eco == "Debian":
            v = _deb_version(rnd)
            for b in range(rnd.randint(1, 3)):
                packages.append(InstalledPackage("Debian", name, v, "dpkg", f"{name}-bin{b}", v))
        else:
            v = _sem(rnd)
            packages.append(
                InstalledPackage(eco, name, v, "pip" if eco == "PyPI" else "npm", name, v, "/srv/app")
            )
    # name pool: every installed name plus 3x as many names that are not installed
    pool = [(p.ecosystem, p.name) for p in packages] + [
        (rnd.choice(["Debian", "PyPI", "npm"]), f"other-{i}") for i in range(3 * n_pkg)
    ]
    advisories = []
    for i in range(n_adv):
        eco, name = rnd.choice(pool)
        if eco == "Debian":
            ranges = [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": _deb_version(rnd)}]}]
            ecosystem = rnd.choice(["Debian:12", "Debian:12", "Debian:11", "Debian"])
        else:
            lo, hi = sorted([_sem(rnd), _sem(rnd)], key=lambda v: version_key(eco.lower(), v))
            kind = rnd.choice(["fixed", "fixed", "last_affected"])
            ranges = [
                {
                    "type": "ECOSYSTEM" if eco == "PyPI" else "SEMVER",
                    "events": [{"introduced": lo}, {kind: hi}],
                }
            ]
            ecosystem = eco
        advisories.append(
            {
                "id": f"BENCH-{i}",
                "aliases": [f"CVE-2099-{i}"],
                "summary": f"synthetic advisory {i}",
                "severity": [
                    {
                        "type": "CVSS_V3",
                        "score": rnd.choice(
                            [
                                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                                "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N",
                                "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N",
                            ]
                        ),
                    }
                ],
                "affected": [{"package": {"ecosystem": ecosystem, "name": name}, "ranges": ranges}],
            }
        )
    return advisories, packages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advisories", type=int, default=50_000)
    parser.add_argument("--packages", type=int, default=3_000)
    parser.add_argument("--strict", action="store_true", help="exit 3 when the target is missed")
    args = parser.parse_args()
    advisories, packages = generate(args.advisories, args.packages)
    t0 = time.perf_counter()
    db = VulnDB()
    for adv in advisories:
        db.add_osv(adv, "bench.json")
    load_s = time.perf_counter() - t0
    distro = Distro("debian", "12", "bookworm", "Debian")
    version_key.cache_clear()  # match from a cold version cache: nothing parsed in advance
    result = match(packages, db, distro)
    names = len({(p.ecosystem, p.name) for p in packages})
    print(f"advisories {args.advisories}  installed packages {len(packages)} ({names} distinct names)")
    print(f"load into index: {load_s:.2f} s  ({args.advisories / load_s:,.0f} advisories/s)")
    print(
        f"match: {result.seconds:.3f} s  findings {len(result.findings)}  "
        f"backports suppressed {result.suppressed_backports}"
    )
    ok = result.seconds < TARGET_S
    print(
        f"SUMMARY vulns_match advisories={args.advisories} packages={len(packages)} "
        f"match_s={result.seconds:.3f} "
        f"target_s={TARGET_S} ratio={TARGET_S / max(result.seconds, 1e-9):.1f}x "
        f"result={'PASS' if ok else 'FAIL'}"
    )
    return 3 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
