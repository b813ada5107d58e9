"""One-click fix of baseline checks that have a safe remediation: file permissions and ownership.

A check is fixable when every rule is a plain ``file`` rule about mode, owner or group (no content, no
negation, aggregated with ``all``): the fix only takes permission bits away (``mode & max_mode``) and
gives the file to the first allowed owner / group, which cannot break a service the way a changed
sysctl or configuration line can. Symbolic links are never followed or changed. After the change the
check is evaluated again: fixed means it passes now.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from hostward.agent.baseline.engine import evaluate_check
from hostward.agent.baseline.host import HostView
from hostward.agent.baseline.model import Check, Policy
from hostward.agent.baseline.rules import FileRule


def permission_rules(check: Check) -> list[FileRule] | None:
    """The check's rules when it can be fixed by changing permissions and ownership, else None."""
    if check.condition != "all" or not check.rules:
        return None
    rules: list[FileRule] = []
    for rule in check.rules:
        if not isinstance(rule, FileRule):
            return None
        if rule.negated or rule.contains is not None or rule.lacks is not None or rule.exists is False:
            return None
        if rule.max_mode is None and not rule.owner and not rule.group:
            return None
        rules.append(rule)
    return rules


def fixable_checks(policies: list[Policy]) -> set[tuple[str, str]]:
    """(policy id, check id) of the checks :func:`fix_check` can fix."""
    return {(p.id, c.id) for p in policies for c in p.checks if permission_rules(c) is not None}


@dataclass
class CheckFix:
    policy_id: str
    check_id: str
    status: str  # fixed | failed
    detail: str
    result: dict[str, Any] | None = None  # the check's result after the fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "check_id": self.check_id,
            "status": self.status,
            "detail": self.detail[:2000],
            "result": self.result,
        }


def _first_id(host: HostView, names: tuple[str, ...], lookup: str) -> int | None:
    for name in names:
        value = host.uid(name) if lookup == "uid" else host.gid(name)
        if value is not None:
            return value
    return None


def fix_check(policy: Policy, check: Check, host: HostView) -> CheckFix:
    """Apply the permission / ownership changes the check asks for, then evaluate it again."""
    rules = permission_rules(check)
    if rules is None:
        return CheckFix(
            policy.id, check.id, "failed", "no safe automatic fix for this check; see its remediation"
        )
    changes: list[str] = []
    problems: list[str] = []
    for rule in rules:
        for real in (p for pattern in rule.files for p in host.glob(pattern)):
            shown = host.display(real)
            st = host.lstat(real)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                problems.append(f"{shown} is a symbolic link: not changed")
                continue
            try:
                mode = stat.S_IMODE(st.st_mode)
                if rule.max_mode is not None and mode & ~rule.max_mode:
                    os.chmod(real, mode & rule.max_mode, follow_symlinks=False)
                    changes.append(f"{shown} mode {mode:04o} -> {mode & rule.max_mode:04o}")
                uid = _first_id(host, rule.owner, "uid") if rule.owner else None
                wanted_uids = {host.uid(o) for o in rule.owner} - {None}
                gid = _first_id(host, rule.group, "gid") if rule.group else None
                wanted_gids = {host.gid(g) for g in rule.group} - {None}
                new_uid = uid if uid is not None and st.st_uid not in wanted_uids else -1
                new_gid = gid if gid is not None and st.st_gid not in wanted_gids else -1
                if new_uid != -1 or new_gid != -1:
                    os.chown(real, new_uid, new_gid, follow_symlinks=False)
                    changes.append(
                        f"{shown} owner {st.st_uid}:{st.st_gid} -> "
                        f"{st.st_uid if new_uid == -1 else new_uid}:{st.st_gid if new_gid == -1 else new_gid}"
                    )
            except OSError as exc:
                problems.append(f"{shown}: {exc.strerror or exc}")
    after = evaluate_check(policy, check, host)
    done = "; ".join(changes) or "nothing changed"
    if after.result == "passed":
        return CheckFix(policy.id, check.id, "fixed", "; ".join([done, *problems]), after.to_dict())
    why = "; ".join([*problems, f"still {after.result}: {after.reason}"])
    return CheckFix(policy.id, check.id, "failed", f"{done}; {why}", after.to_dict())
