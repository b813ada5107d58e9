"""Rules of hostward's own baseline syntax: file, setting, sysctl, process, service, package, command.

Each rule states the *secure* condition; ``evaluate`` says whether it holds (True/False) or could not be
judged (None: target missing, unreadable, command timed out) with a reason that names what was seen.
"""

from __future__ import annotations

import contextlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from hostward.agent.baseline.host import HostView
from hostward.agent.baseline.model import Outcome

MISSING_CHOICES = ("passed", "failed", "not_applicable")
_NUM = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?\d+)\s*$")
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def _missing(choice: str, why: str) -> Outcome:
    return Outcome({"passed": True, "failed": False}.get(choice), why)


@dataclass(frozen=True)
class Expect:
    """Comparisons on one value (all given ones must hold); string comparisons ignore case by default."""

    equals: tuple[str, ...] = ()  # one of
    not_in: tuple[str, ...] = ()
    compare: tuple[str, int] | None = None
    matches: re.Pattern[str] | None = None
    excludes_items: tuple[str, ...] = ()  # comma-separated value must not contain these items
    ignore_case: bool = True

    @property
    def empty(self) -> bool:
        return not (self.equals or self.not_in or self.compare or self.matches or self.excludes_items)

    def _norm(self, s: str) -> str:
        return s.lower() if self.ignore_case else s

    def check(self, value: str) -> tuple[bool, str]:
        v = self._norm(value.strip())
        if self.equals and v not in {self._norm(e) for e in self.equals}:
            return False, f"want {' or '.join(self.equals)}"
        if self.not_in and v in {self._norm(e) for e in self.not_in}:
            return False, f"must not be {' or '.join(self.not_in)}"
        if self.compare is not None:
            op, number = self.compare
            token = v.split()[0] if v.split() else ""
            try:
                got = int(token, 0) if token.lower().startswith(("0x", "0o")) else int(token)
            except ValueError:
                return False, f"not a number (want {op} {number})"
            if not _OPS[op](got, number):
                return False, f"want {op} {number}"
        if self.matches is not None and not self.matches.search(value):
            return False, f"want a value matching {self.matches.pattern!r}"
        if self.excludes_items and not value.strip().startswith("-"):
            # sshd lists: "+x" appends to and "^x" prepends to the defaults, "-x" only removes from them
            listed = value.strip().lstrip("+^")
            items = {self._norm(i.strip()) for i in re.split(r"[,\s]+", listed) if i.strip()}
            bad = [i for i in self.excludes_items if self._norm(i) in items]
            if bad:
                return False, f"must not include {', '.join(bad)}"
        return True, "as required"


def parse_compare(text: str) -> tuple[str, int]:
    m = _NUM.match(str(text))
    if m is None:
        raise ValueError(f"compare must look like '<= 4' (got {text!r})")
    return m.group(1), int(m.group(2))


@dataclass(frozen=True)
class Includes:
    """Follow ``directive PATTERN`` lines (sshd ``Include``, nginx ``include``), inline, in order."""

    directive: str
    base: str  # relative patterns are relative to this host directory

    def expand(self, host: HostView, real: Path, depth: int = 0) -> list[str]:
        lines = host.read_lines(real)
        if depth > 8:
            return lines
        out: list[str] = []
        pat = re.compile(rf"^\s*{re.escape(self.directive)}\s+(.+?)\s*;?\s*$", re.IGNORECASE)
        for line in lines:
            m = pat.match(line)
            if m is None:
                out.append(line)
                continue
            for target in m.group(1).split():
                target = target.strip("\"'")
                host_pattern = target if target.startswith("/") else f"{self.base.rstrip('/')}/{target}"
                for inc in host.glob(host_pattern):
                    with contextlib.suppress(OSError):
                        if inc.is_file():
                            out.extend(self.expand(host, inc, depth + 1))
        return out


def _config_lines(
    host: HostView, files: tuple[str, ...], includes: Includes | None
) -> tuple[list[str], list[str]]:
    """(lines of every existing file, in order; host paths that exist). Raises OSError when unreadable."""
    lines: list[str] = []
    found: list[str] = []
    for pattern in files:
        for real in host.glob(pattern):
            st = host.stat(real)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            found.append(host.display(real))
            lines.extend(includes.expand(host, real) if includes else host.read_lines(real))
    return lines, found


@dataclass(frozen=True)
class FileRule:
    text: str
    files: tuple[str, ...]
    exists: bool | None = None
    contains: re.Pattern[str] | None = None
    lacks: re.Pattern[str] | None = None
    max_mode: int | None = None
    owner: tuple[str, ...] = ()
    group: tuple[str, ...] = ()
    missing: str = "not_applicable"
    includes: Includes | None = None
    negated: bool = False

    def evaluate(self, host: HostView) -> Outcome:
        out = self._evaluate(host)
        if self.negated and out.value is not None:
            return Outcome(not out.value, f"not ({out.reason})")
        return out

    def _evaluate(self, host: HostView) -> Outcome:
        paths = [p for pattern in self.files for p in host.glob(pattern)]
        existing = [p for p in paths if host.lstat(p) is not None]
        names = ", ".join(self.files)
        if not existing:
            if self.exists is False:
                return Outcome(True, f"{names} does not exist")
            if self.exists is True:
                return Outcome(False, f"{names} does not exist")
            return _missing(self.missing, f"{names} does not exist")
        if self.exists is False:
            return Outcome(False, f"{host.display(existing[0])} exists")
        for real in existing:
            shown = host.display(real)
            st = host.stat(real) or host.lstat(real)
            assert st is not None
            if self.max_mode is not None:
                extra = stat.S_IMODE(st.st_mode) & ~self.max_mode
                if extra:
                    return Outcome(
                        False,
                        f"{shown} has mode {stat.S_IMODE(st.st_mode):04o} (at most {self.max_mode:04o})",
                    )
            if self.owner:
                want = {host.uid(o) for o in self.owner} - {None}
                if st.st_uid not in want:
                    return Outcome(
                        False, f"{shown} is owned by uid {st.st_uid} (want {'/'.join(self.owner)})"
                    )
            if self.group:
                want = {host.gid(g) for g in self.group} - {None}
                if st.st_gid not in want:
                    return Outcome(False, f"{shown} has group gid {st.st_gid} (want {'/'.join(self.group)})")
        if self.contains is not None or self.lacks is not None:
            try:
                lines, _ = _config_lines(host, self.files, self.includes)
            except OSError as exc:
                return Outcome(None, f"cannot read {names}: {exc.strerror or exc}")
            if self.contains is not None and not any(self.contains.search(line) for line in lines):
                return Outcome(False, f"no line of {names} matches {self.contains.pattern!r}")
            if self.lacks is not None:
                bad = next((line for line in lines if self.lacks.search(line)), None)
                if bad is not None:
                    return Outcome(False, f"{names} has the line {bad.strip()[:200]!r}")
        return Outcome(True, f"{names}: as required")


@dataclass(frozen=True)
class SettingRule:
    """``key value`` (or ``key = value``) configuration settings: the effective value is compared."""

    text: str
    key: str
    files: tuple[str, ...]
    expect: Expect
    separator: str = ""  # "" = whitespace
    occurrence: str = "first"  # sshd: the first value wins; most other programs: the last
    default: str | None = None
    stop_at: re.Pattern[str] | None = None
    includes: Includes | None = None
    strip: str = "\"';"
    missing: str = "not_applicable"
    negated: bool = False

    def value(self, lines: list[str]) -> str | None:
        found: str | None = None
        key = self.key.lower()
        for line in lines:
            body = line.split("#", 1)[0].strip()
            if not body:
                continue
            if self.stop_at is not None and self.stop_at.search(body):
                break
            if self.separator:
                name, sep, val = body.partition(self.separator)
                if not sep:
                    continue
            else:
                parts = body.split(None, 1)
                name, val = parts[0], parts[1] if len(parts) > 1 else ""
            if name.strip().lower() != key:
                continue
            found = val.strip().strip(self.strip).strip()
            if self.occurrence == "first":
                return found
        return found

    def evaluate(self, host: HostView) -> Outcome:
        out = self._evaluate(host)
        if self.negated and out.value is not None:
            return Outcome(not out.value, f"not ({out.reason})")
        return out

    def _evaluate(self, host: HostView) -> Outcome:
        names = ", ".join(self.files)
        try:
            lines, found = _config_lines(host, self.files, self.includes)
        except OSError as exc:
            return Outcome(None, f"cannot read {names}: {exc.strerror or exc}")
        if not found:
            return _missing(self.missing, f"{names} does not exist")
        value = self.value(lines)
        where = found[0]
        if value is None:
            if self.default is None:
                return Outcome(False, f"{self.key} is not set in {where}")
            value = self.default
            where = f"{where} (not set; default)"
        ok, want = self.expect.check(value)
        return Outcome(ok, f"{self.key} is {value!r} in {where}" + ("" if ok else f"; {want}"))


@dataclass(frozen=True)
class SysctlRule:
    text: str
    key: str
    expect: Expect
    negated: bool = False

    def evaluate(self, host: HostView) -> Outcome:
        value = host.sysctl(self.key)
        if value is None:
            return Outcome(None, f"kernel parameter {self.key} does not exist on this host")
        ok, want = self.expect.check(value)
        if self.negated:
            ok = not ok
        return Outcome(ok, f"{self.key} = {value}" + ("" if ok else f"; {want}"))


@dataclass(frozen=True)
class ProcessRule:
    text: str
    names: tuple[str, ...]
    running: bool = True

    def evaluate(self, host: HostView) -> Outcome:
        wanted = set(self.names)
        for proc in host.processes():
            argv0 = proc.argv[0].rsplit("/", 1)[-1] if proc.argv else ""
            if proc.name in wanted or argv0 in wanted:
                return Outcome(self.running, f"process {proc.name} (pid {proc.pid}) is running")
        return Outcome(not self.running, f"no {'/'.join(self.names)} process is running")


@dataclass(frozen=True)
class ServiceRule:
    """Whether a service is enabled at boot: systemd ``*.wants`` links (service or socket) or SysV links."""

    text: str
    names: tuple[str, ...]
    enabled: bool = True

    def evaluate(self, host: HostView) -> Outcome:
        for name in self.names:
            unit = name if "." in name else f"{name}.service"
            masked = host.path(f"/etc/systemd/system/{unit}")
            if host.lstat(masked) is not None and masked.is_symlink():
                with contextlib.suppress(OSError):
                    if str(masked.readlink()) == "/dev/null":
                        continue
            units = [unit] if "." in name else [unit, f"{name}.socket"]
            for u in units:
                for link in host.glob(f"/etc/systemd/system/*.wants/{u}"):
                    if host.lstat(link) is not None:
                        return Outcome(self.enabled, f"{u} is enabled ({host.display(link)})")
            for link in host.glob(f"/etc/rc[2-5].d/S[0-9][0-9]{name}"):
                if host.lstat(link) is not None:
                    return Outcome(self.enabled, f"{name} is enabled ({host.display(link)})")
        return Outcome(not self.enabled, f"{'/'.join(self.names)} is not enabled")


@dataclass(frozen=True)
class PackageRule:
    text: str
    names: tuple[str, ...]
    installed: bool = True

    def evaluate(self, host: HostView) -> Outcome:
        installed = _dpkg_installed(host)
        if installed is None:
            return Outcome(None, "no dpkg package database")
        hits = [n for n in self.names if n in installed]
        if hits:
            return Outcome(self.installed, f"package {hits[0]} is installed")
        return Outcome(not self.installed, f"{'/'.join(self.names)} is not installed")


def _dpkg_installed(host: HostView) -> set[str] | None:
    try:
        lines = host.read_lines(host.path("/var/lib/dpkg/status"))
    except OSError:
        return None
    names: set[str] = set()
    pkg = ""
    for line in lines:
        if line.startswith("Package:"):
            pkg = line[8:].strip()
        elif line.startswith("Status:") and line.split()[1:] == ["install", "ok", "installed"]:
            names.add(pkg)
    return names


@dataclass(frozen=True)
class CommandRule:
    """Output of a command run on the real host (never below ``root``), with a timeout."""

    text: str
    argv: tuple[str, ...]
    timeout: float | None = None
    output_contains: re.Pattern[str] | None = None
    output_lacks: re.Pattern[str] | None = None
    exit_code: int | None = None
    negated: bool = False

    def evaluate(self, host: HostView) -> Outcome:
        out = host.run(self.argv, self.timeout)
        cmd = " ".join(self.argv)
        if out.error:
            return Outcome(None, f"command {cmd!r}: {out.error}")
        ok, why = True, f"command {cmd!r}: as required"
        if self.exit_code is not None and out.returncode != self.exit_code:
            ok, why = False, f"command {cmd!r} exited {out.returncode} (want {self.exit_code})"
        elif self.output_contains is not None and not self.output_contains.search(out.stdout):
            ok, why = False, f"output of {cmd!r} does not match {self.output_contains.pattern!r}"
        elif self.output_lacks is not None and (m := self.output_lacks.search(out.stdout)):
            ok, why = False, f"output of {cmd!r} has {m.group(0).strip()[:200]!r}"
        if self.negated:
            return Outcome(not ok, f"not ({why})")
        return Outcome(ok, why)
