"""Installed software from the dpkg status database and the rpm database."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from hostward.wire import Package

DPKG_STATUS = "var/lib/dpkg/status"
RPM_DBS = ("var/lib/rpm", "usr/lib/sysimage/rpm")
RPM_QUERY_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"


def parse_dpkg_status(text: str) -> list[Package]:
    """Packages whose Status is "install ok installed" (half-installed and removed ones are not software)."""
    packages: list[Package] = []
    fields: dict[str, str] = {}

    def flush() -> None:
        if fields.get("Status", "").split() == ["install", "ok", "installed"] and "Package" in fields:
            packages.append(
                Package(
                    name=fields["Package"],
                    version=fields.get("Version", ""),
                    arch=fields.get("Architecture", ""),
                    manager="dpkg",
                )
            )
        fields.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            continue
        if line[0] in " \t":
            continue  # continuation of a multi-line field (Description, Conffiles)
        key, sep, value = line.partition(":")
        if sep and key in ("Package", "Status", "Version", "Architecture"):
            fields[key] = value.strip()
    flush()
    return packages


def dpkg_packages(root: Path = Path("/")) -> list[Package] | None:
    """None when the host has no dpkg database."""
    path = root / DPKG_STATUS
    if not path.exists():
        return None
    return parse_dpkg_status(path.read_text(encoding="utf-8", errors="replace"))


def parse_rpm_output(text: str) -> list[Package]:
    packages: list[Package] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0] or parts[0] == "gpg-pubkey":
            continue
        arch = "" if parts[2] == "(none)" else parts[2]
        packages.append(Package(name=parts[0], version=parts[1], arch=arch, manager="rpm"))
    return packages


def rpm_packages(root: Path = Path("/"), rpm: str | None = None) -> list[Package] | None:
    """None when there is no rpm binary or no rpm database under ``root``."""
    binary = rpm or shutil.which("rpm")
    if binary is None or not any((root / db).is_dir() for db in RPM_DBS):
        return None
    argv = [binary, "-qa", "--qf", RPM_QUERY_FORMAT]
    if root != Path("/"):
        argv += ["--root", str(root)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"rpm -qa exited {proc.returncode}: {proc.stderr.strip()[:300]}")
    return parse_rpm_output(proc.stdout)


def collect_packages(root: Path = Path("/")) -> list[Package]:
    """dpkg and rpm packages (a host can have both databases)."""
    found: list[Package] = []
    for source in (dpkg_packages, rpm_packages):
        result = source(root)
        if result:
            found.extend(result)
    found.sort(key=lambda p: (p.manager, p.name, p.arch))
    return found
