"""Ransomware prevention policy: what to protect, what to do, and the behaviour rule's thresholds.

Behaviour rule defaults: one process renaming or rewriting more than ``rate_files`` = 20 files of
protected types within ``rate_window_s`` = 10 seconds raises ``ransomware_0002``. Legitimate bulk
writers (a backup restore, an office suite saving a batch) rarely rewrite 20 existing documents in
10 s; encryption tools do it in well under a second.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from hostward.agent.errors import AgentError

MAX_PROTECTED_DIRS = 20
MAX_EXCLUDED_DIRS = 20
ACTIONS = ("alarm", "alarm_and_isolate")
DEFAULT_TYPES = (
    "doc", "docx", "xls", "xlsx", "ppt", "pptx", "pdf", "txt", "csv", "sql", "db", "jpg", "jpeg", "png",
    "zip", "tar", "gz", "7z", "rar", "bak", "html", "php", "py", "java", "c", "js", "json", "xml",
)  # fmt: skip
DEFAULT_RATE_FILES = 20
DEFAULT_RATE_WINDOW_S = 10.0
BAIT_ROTATE_S = 12 * 3600
_TYPE = re.compile(r"^[a-z0-9]{1,10}$")


class RansomwareError(AgentError):
    code = "ransomware_error"


class PolicyError(RansomwareError):
    code = "ransomware_invalid_policy"


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass
class RansomwarePolicy:
    protected_dirs: list[str] = field(default_factory=list)
    excluded_dirs: list[str] = field(default_factory=list)
    file_types: list[str] = field(default_factory=lambda: list(DEFAULT_TYPES))
    action: str = "alarm"
    bait: bool = True
    rate_files: int = DEFAULT_RATE_FILES
    rate_window_s: float = DEFAULT_RATE_WINDOW_S
    snapshot_keep: int = 7

    def is_excluded(self, path: str) -> bool:
        return any(_within(path, ex) for ex in self.excluded_dirs)

    def is_protected(self, path: str) -> bool:
        return any(_within(path, d) for d in self.protected_dirs) and not self.is_excluded(path)

    def protected_type(self, path: str) -> bool:
        """Whether any suffix of the name is a protected type (``report.docx.locked`` counts)."""
        parts = os.path.basename(path).lower().split(".")[1:]
        types = set(self.file_types)
        return any(p in types for p in parts)


def validate(policy: RansomwarePolicy) -> RansomwarePolicy:
    """Check limits; returns the policy with normalised paths or raises ``PolicyError``."""
    if len(policy.protected_dirs) > MAX_PROTECTED_DIRS:
        raise PolicyError(f"protected_dirs: at most {MAX_PROTECTED_DIRS}, got {len(policy.protected_dirs)}")
    if len(policy.excluded_dirs) > MAX_EXCLUDED_DIRS:
        raise PolicyError(f"excluded_dirs: at most {MAX_EXCLUDED_DIRS}, got {len(policy.excluded_dirs)}")
    for key in ("protected_dirs", "excluded_dirs"):
        items = getattr(policy, key)
        for p in items:
            if not os.path.isabs(p):
                raise PolicyError(f"{key}: {p!r} must be an absolute path")
        setattr(policy, key, [os.path.normpath(p) for p in items])
    policy.file_types = [t.lstrip(".").lower() for t in policy.file_types]
    for t in policy.file_types:
        if not _TYPE.match(t):
            raise PolicyError(f"file_types: {t!r} must be 1-10 letters or digits")
    if policy.action not in ACTIONS:
        raise PolicyError(f"action: {policy.action!r} must be one of {', '.join(ACTIONS)}")
    if policy.rate_files < 1 or policy.rate_window_s <= 0:
        raise PolicyError("rate_files must be ≥1 and rate_window_s > 0")
    if policy.snapshot_keep < 1:
        raise PolicyError("snapshot_keep must be ≥1")
    return policy
