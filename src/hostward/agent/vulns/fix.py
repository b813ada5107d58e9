"""One-click fix of vulnerable OS packages: the package manager upgrades them, then they are re-checked.

Only dpkg hosts are fixed automatically (``apt-get install --only-upgrade``, non-interactive, existing
configuration files kept, bounded by a timeout); language packages and rpm hosts get their fix command
to run by hand, as the reference product does for everything but OS packages. A package counts as fixed
only when the re-read dpkg database shows every one of its binary packages at or above the fixed version
(or, with no fixed version known, at a different version than before): the upgrade command succeeding is
not enough, since a mirror without the fix "succeeds" too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostward.agent.vulns.inventory import parse_dpkg_status
from hostward.agent.vulns.versions import compare

FIX_TIMEOUT_S = 900.0
UPDATE_TIMEOUT_S = 300.0
MAX_TARGETS = 50  # the reference's limit per fix
MAX_DETAIL = 1500
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._:~-]{0,127}$")
# Non-interactive: no debconf questions, no needrestart prompt, no changelog pager.
_APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "NEEDRESTART_MODE": "a",
    "APT_LISTCHANGES_FRONTEND": "none",
    "LC_ALL": "C",
}
_KEEP_CONFIG = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")


@dataclass(frozen=True)
class FixTarget:
    """One vulnerable package to fix (the findings it closes, its binaries and the fixed version)."""

    package: str
    manager: str
    binaries: tuple[str, ...]
    fixed_version: str | None
    finding_ids: tuple[str, ...]
    fix_command: str = ""


@dataclass
class PackageFix:
    """What happened to one target: ``fixed`` or ``failed`` with the reason."""

    package: str
    finding_ids: list[str]
    status: str
    detail: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    reboot_required: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "finding_ids": self.finding_ids,
            "status": self.status,
            "detail": self.detail[:MAX_DETAIL],
            "before": self.before,
            "after": self.after,
            "reboot_required": self.reboot_required,
            "seconds": round(self.seconds, 2),
        }


class FixPayloadError(ValueError):
    """The ``vuln_fix`` payload is not what the manager sends."""


def parse_targets(payload: dict[str, Any]) -> list[FixTarget]:
    """``{packages: [{package, manager, binaries, fixed_versions, finding_ids, fix_command}]}``; the
    target version is the highest of ``fixed_versions`` (or ``fixed_version``)."""
    raw = payload.get("packages")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TARGETS:
        raise FixPayloadError(f"vuln_fix needs packages: a list of 1 to {MAX_TARGETS} packages")
    out: list[FixTarget] = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise FixPayloadError(f"packages[{n}]: not an object")
        package = str(item.get("package") or "")
        binaries = item.get("binaries") or [package]
        ids = item.get("finding_ids") or []
        versions = item.get("fixed_versions") or [item.get("fixed_version")]
        if not isinstance(versions, list):
            raise FixPayloadError(f"packages[{n}].fixed_versions: a list of versions")
        fixed: str | None = None
        for v in versions:
            if isinstance(v, str) and v and (fixed is None or compare("debian", v, fixed) > 0):
                fixed = v
        if not isinstance(binaries, list) or not all(isinstance(b, str) for b in binaries):
            raise FixPayloadError(f"packages[{n}].binaries: a list of package names")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise FixPayloadError(f"packages[{n}].finding_ids: a list of ids")
        # A name starting with '-' would be an option to the package manager.
        for name in (package, *binaries):
            if not _NAME.match(name):
                raise FixPayloadError(f"packages[{n}]: {name!r} is not a package name")
        out.append(
            FixTarget(
                package=package,
                manager=str(item.get("manager") or ""),
                binaries=tuple(dict.fromkeys(binaries)),
                fixed_version=fixed,
                finding_ids=tuple(ids),
                fix_command=str(item.get("fix_command") or "")[:1000],
            )
        )
    return out


@dataclass
class CommandRun:
    returncode: int | None  # None: killed at the timeout
    output: str
    seconds: float


def run_command(argv: Sequence[str], timeout: float, env: dict[str, str]) -> CommandRun:
    """Run ``argv`` in its own process group; on timeout the whole group (dpkg included) is killed."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as exc:
        return CommandRun(127, f"{argv[0]}: {exc.strerror or exc}", 0.0)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        code = None
    return CommandRun(code, out.decode("utf-8", "replace"), time.monotonic() - started)


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-MAX_DETAIL:]


class VulnFixer:
    """Upgrades the targets with the host's package manager and re-checks them.

    ``apt_options`` are extra ``-o`` settings for every apt-get call (a proxy, or in tests a private
    source list); ``root`` is where the dpkg database is re-read.
    """

    def __init__(
        self,
        root: Path = Path("/"),
        *,
        apt_options: Sequence[str] = (),
        timeout: float = FIX_TIMEOUT_S,
        update: bool = True,
        update_timeout: float = UPDATE_TIMEOUT_S,
        apt_get: str = "apt-get",
    ) -> None:
        self.root = root
        self.apt_options = tuple(apt_options)
        self.timeout = timeout
        self.update = update
        self.update_timeout = update_timeout
        self.apt_get = apt_get

    def _apt(self, *args: str) -> list[str]:
        opts: list[str] = []
        for o in self.apt_options:
            opts += ["-o", o]
        return [self.apt_get, "-q", "-y", "-o", "DPkg::Lock::Timeout=120", *opts, *args]

    def installed(self) -> dict[str, tuple[str, str]]:
        """Binary package -> (its version, its source package's version) from the dpkg database."""
        try:
            text = (self.root / "var/lib/dpkg/status").read_text(errors="replace")
        except OSError:
            return {}
        return {p.binary: (p.binary_version, p.version) for p in parse_dpkg_status(text)}

    def fix(self, targets: Sequence[FixTarget]) -> list[PackageFix]:
        """Fix each target on its own; one failing does not stop the others."""
        dpkg = [t for t in targets if t.manager == "dpkg"]
        results: dict[int, PackageFix] = {}
        for n, t in enumerate(targets):
            if t.manager != "dpkg":
                how = f"; run by hand: {t.fix_command}" if t.fix_command else ""
                results[n] = PackageFix(
                    t.package,
                    list(t.finding_ids),
                    "failed",
                    f"one-click fix covers dpkg (apt) packages only, not {t.manager or 'this'} packages{how}",
                )
        if dpkg and self.root.resolve() != Path("/"):
            # apt-get acts on the machine the agent runs on, not on a host mounted at another root
            for n, t in enumerate(targets):
                if t.manager == "dpkg":
                    results[n] = PackageFix(
                        t.package,
                        list(t.finding_ids),
                        "failed",
                        f"one-click fix needs the agent on the host itself (host root is {self.root})",
                    )
        elif dpkg:
            update_note = self._refresh_lists()
            for n, t in enumerate(targets):
                if t.manager == "dpkg":
                    results[n] = self._fix_dpkg(t, update_note)
        return [results[n] for n in range(len(targets))]

    def _refresh_lists(self) -> str:
        if not self.update:
            return ""
        run = run_command(self._apt("update"), self.update_timeout, _APT_ENV)
        if run.returncode == 0:
            return ""
        why = "timed out" if run.returncode is None else f"exit {run.returncode}"
        return f"apt-get update {why} (package lists may be stale): {_tail(run.output, 4)}"

    def _fix_dpkg(self, t: FixTarget, update_note: str) -> PackageFix:
        before_all = self.installed()
        present = [b for b in t.binaries if b in before_all]
        before = {b: before_all[b][0] for b in present}
        result = PackageFix(t.package, list(t.finding_ids), "failed", "", before=before)
        if not present:
            result.detail = "none of its packages is installed any more; a rescan will close the finding"
            return result
        argv = self._apt(*_KEEP_CONFIG, "install", "--only-upgrade", *present)
        run = run_command(argv, self.timeout, _APT_ENV)
        result.seconds = run.seconds
        after_all = self.installed()
        result.after = {b: after_all[b][0] for b in present if b in after_all}
        notes = [update_note] if update_note else []
        if run.returncode is None:
            result.detail = "; ".join(
                [f"apt-get timed out after {self.timeout:.0f} s and was stopped", *notes, _tail(run.output)]
            )
            return result
        if run.returncode != 0:
            result.detail = "; ".join([f"apt-get failed (exit {run.returncode})", *notes, _tail(run.output)])
            return result
        still = self._still_vulnerable(t, present, before_all, after_all)
        if still:
            result.detail = "; ".join(
                [
                    "apt-get succeeded but the package is still vulnerable: " + ", ".join(still),
                    *notes,
                    "is the fixed version available from the configured repositories?",
                ]
            )
            return result
        result.status = "fixed"
        result.reboot_required = (
            any(b.startswith(("linux-image", "linux-modules")) for b in present)
            or (self.root / "run/reboot-required").exists()
        )
        changes = ", ".join(f"{b} {before[b]} -> {result.after.get(b, '(removed)')}" for b in present)
        result.detail = f"upgraded {changes}" + ("; restart required" if result.reboot_required else "")
        return result

    def _still_vulnerable(
        self,
        t: FixTarget,
        present: list[str],
        before: dict[str, tuple[str, str]],
        after: dict[str, tuple[str, str]],
    ) -> list[str]:
        still = []
        for b in present:
            if b not in after:
                continue  # removed by the upgrade (replaced): nothing vulnerable left
            version, source_version = after[b]
            if t.fixed_version is not None:
                if compare("debian", source_version, t.fixed_version) < 0:
                    still.append(f"{b} {version} (source {source_version} < {t.fixed_version})")
            elif version == before[b][0]:
                still.append(f"{b} {version} (unchanged)")
        return still
