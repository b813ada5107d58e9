"""``bundle.global_settings["wtp"]`` → the engine's ``WtpConfig`` (shape in docs/DEVNOTES.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hostward.agent.errors import AgentError
from hostward.agent.wtp import ProtectedDir, Schedule, Window, WtpConfig, WtpConfigError, validate
from hostward.wire import PolicyBundle

SETTINGS_KEY = "wtp"
WTP_EDITION = "wtp"


@dataclass(frozen=True)
class Desired:
    """What the bundle asks for: ``config`` None means WTP off on this server."""

    config: WtpConfig | None
    raw: dict[str, Any]
    remote_backup: bool = False


def _strings(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WtpConfigError(f"{where}{key}: expected a list of strings")
    return list(value)


def parse_config(raw: Any) -> WtpConfig:
    """``global_settings["wtp"]`` as a validated ``WtpConfig``; ``WtpConfigError`` names the field."""
    if not isinstance(raw, dict):
        raise WtpConfigError("wtp: expected an object")
    dirs = []
    raw_dirs = raw.get("dirs") or []
    if not isinstance(raw_dirs, list):
        raise WtpConfigError("dirs: expected a list")
    for i, d in enumerate(raw_dirs):
        if not isinstance(d, dict) or not isinstance(d.get("path"), str):
            raise WtpConfigError(f"dirs[{i}]: expected an object with a path")
        where = f"dirs[{i}]."
        dirs.append(
            ProtectedDir(
                path=d["path"],
                excluded_subdirs=_strings(d, "excluded_subdirs", where),
                excluded_types=_strings(d, "excluded_types", where),
                excluded_paths=_strings(d, "excluded_paths", where),
                suspended=bool(d.get("suspended", False)),
            )
        )
    sched = raw.get("schedule") or {}
    if not isinstance(sched, dict):
        raise WtpConfigError("schedule: expected an object")
    windows = []
    for i, w in enumerate(sched.get("windows") or []):
        if (
            not isinstance(w, dict)
            or not isinstance(w.get("start"), str)
            or not isinstance(w.get("end"), str)
        ):
            raise WtpConfigError(f"schedule.windows[{i}]: expected {{start: HH:MM, end: HH:MM}}")
        windows.append(Window(w["start"], w["end"]))
    weekdays = sched.get("weekdays", [1, 2, 3, 4, 5, 6, 7])
    if not isinstance(weekdays, list) or not all(isinstance(x, int) for x in weekdays):
        raise WtpConfigError("schedule.weekdays: expected a list of 1..7")
    backup_path = raw.get("backup_path") or WtpConfig().backup_path
    if not isinstance(backup_path, str):
        raise WtpConfigError("backup_path: expected a path")
    cfg = WtpConfig(
        dirs=dirs,
        backup_path=backup_path,
        privileged=_strings(raw, "privileged", ""),
        privileged_children=bool(raw.get("privileged_children", False)),
        schedule=Schedule(enabled=bool(sched.get("enabled", False)), windows=windows, weekdays=weekdays),
        enabled=True,
    )
    try:
        return validate(cfg)
    except WtpConfigError:
        raise
    except AgentError as exc:  # the schedule's own error type
        raise WtpConfigError(f"schedule: {exc}") from exc


def build_key(cfg: WtpConfig) -> str:
    """What forces a new backup when it changes: the trees, their exclusions and the backup path."""
    dirs = [[d.path, d.excluded_subdirs, d.excluded_types, d.excluded_paths] for d in cfg.dirs]
    return json.dumps({"dirs": dirs, "backup": cfg.backup_path}, sort_keys=True)


def desired_from(bundle: PolicyBundle) -> Desired:
    """The WTP state the bundle asks for (raises ``WtpConfigError`` for a configuration it cannot use)."""
    raw = bundle.global_settings.get(SETTINGS_KEY)
    if not isinstance(raw, dict):
        return Desired(None, {})
    on = bool(bundle.protection and bundle.edition == WTP_EDITION and raw.get("enabled"))
    if not on:
        return Desired(None, raw)
    return Desired(parse_config(raw), raw, bool(raw.get("remote_backup", False)))
