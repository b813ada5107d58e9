"""Password complexity policy of the host, as the console shows it: minimum length, the four character
classes, and aging (login.defs), each passed or failed with a suggestion.

Where the values come from, in the order PAM applies them: ``pam_pwquality.so`` / ``pam_cracklib.so``
options on the ``password`` line of /etc/pam.d/common-password (Debian) or system-auth / password-auth
(RHEL) override /etc/security/pwquality.conf (and pwquality.conf.d/*.conf), which override the module
defaults (minlen 8 for pwquality - 9 for cracklib - no required class). A class is required when its
credit is negative (``ucredit = -1``) or when ``minclass`` is 4. Without a quality module nothing is
enforced, so every item fails with that reason. The suggested policy: at least 8 characters, all four
classes, passwords expire within 90 days.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAM_FILES = ("etc/pam.d/common-password", "etc/pam.d/system-auth", "etc/pam.d/password-auth")
_MODULE = re.compile(r"^\s*password\s+(\[[^]]*\]|\S+)\s+(\S*pam_(pwquality|cracklib)\.so)\b(.*)$")
SUGGESTED_MIN_LENGTH = 8
SUGGESTED_MAX_DAYS = 90
CLASSES = (("uppercase", "ucredit"), ("lowercase", "lcredit"), ("digit", "dcredit"), ("special", "ocredit"))


@dataclass(frozen=True)
class ComplexityItem:
    id: str  # min_length | uppercase | lowercase | digit | special | max_days | min_days | warn_age
    passed: bool
    value: str
    suggestion: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": "passed" if self.passed else "failed",
            "value": self.value,
            "suggestion": self.suggestion,
        }


@dataclass(frozen=True)
class ComplexityReport:
    module: str | None  # pam_pwquality | pam_cracklib | None
    source: str  # where the module line was found
    items: tuple[ComplexityItem, ...]

    @property
    def passed(self) -> bool:
        return all(i.passed for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "source": self.source,
            "passed": self.passed,
            "items": [i.to_dict() for i in self.items],
        }


def _read(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _kv_file(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        body = line.split("#", 1)[0].strip()
        key, sep, value = body.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _login_defs(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read(root / "etc/login.defs"):
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def check_complexity(root: Path = Path("/")) -> ComplexityReport:
    """Read PAM, pwquality and login.defs below ``root`` and judge each item."""
    module: str | None = None
    source = ""
    options: dict[str, str] = {}
    for rel in PAM_FILES:
        for line in _read(root / rel):
            m = _MODULE.match(line)
            if m:
                module = f"pam_{m.group(3)}"
                source = "/" + rel
                for token in m.group(4).split():
                    key, _, value = token.partition("=")
                    options[key.lower()] = value
                break
        if module:
            break
    conf: dict[str, str] = {}
    if module == "pam_pwquality":
        conf.update(_kv_file(_read(root / "etc/security/pwquality.conf")))
        for extra in sorted(glob.glob(str(root / "etc/security/pwquality.conf.d/*.conf"))):
            conf.update(_kv_file(_read(Path(extra))))
    settings = {**conf, **options}
    items: list[ComplexityItem] = []
    if module is None:
        why = "no pam_pwquality / pam_cracklib on the PAM password stack: nothing is enforced"
        items.append(ComplexityItem("min_length", False, "not enforced", f"install libpam-pwquality; {why}"))
        for name, _ in CLASSES:
            items.append(
                ComplexityItem(name, False, "not enforced", f"require {name} characters (pwquality)")
            )
    else:
        minlen = _int(settings.get("minlen")) or (8 if module == "pam_pwquality" else 9)
        items.append(
            ComplexityItem(
                "min_length",
                minlen >= SUGGESTED_MIN_LENGTH,
                str(minlen),
                f"set minlen = {max(minlen, 12)} (at least {SUGGESTED_MIN_LENGTH}) "
                "in /etc/security/pwquality.conf",
            )
        )
        minclass = _int(settings.get("minclass")) or 0
        for name, credit in CLASSES:
            value = _int(settings.get(credit)) or 0
            required = value < 0 or minclass >= 4
            shown = f"{credit} = {value}" + (f", minclass = {minclass}" if minclass else "")
            items.append(ComplexityItem(name, required, shown, f"set {credit} = -1 (or minclass = 4)"))
    defs = _login_defs(root)
    max_days = _int(defs.get("PASS_MAX_DAYS")) or 99999
    min_days = _int(defs.get("PASS_MIN_DAYS")) or 0
    warn = _int(defs.get("PASS_WARN_AGE"))
    warn = 7 if warn is None else warn
    items.append(
        ComplexityItem(
            "max_days",
            max_days <= SUGGESTED_MAX_DAYS,
            str(max_days),
            f"set PASS_MAX_DAYS {SUGGESTED_MAX_DAYS} in /etc/login.defs",
        )
    )
    items.append(
        ComplexityItem("min_days", min_days >= 1, str(min_days), "set PASS_MIN_DAYS 1 in /etc/login.defs")
    )
    items.append(ComplexityItem("warn_age", warn >= 7, str(warn), "set PASS_WARN_AGE 7 in /etc/login.defs"))
    return ComplexityReport(module, source, tuple(items))
