"""Typed manager settings: ``<data dir>/manager.toml`` overlaid by command-line values.

Every value has a documented default (README, "Configuration"); a bad value stops start-up with the file,
the key and the reason.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hostward.core.errors import ConfigError

CONFIG_NAME = "manager.toml"


class ManagerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="state directory: database (SQLite), CA and certificates")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite file in data_dir")
    listen: str = Field(default="127.0.0.1:8443", description="console + REST API host:port")
    agent_listen: str = Field(default="0.0.0.0:10180", description="agent channel host:port (HTTPS)")
    agent_url: str = Field(default="", description="URL agents use; empty = derived from agent_listen")
    agent_workers: int = Field(
        default=1, ge=1, le=64, description="processes serving the agent channel (>1 needs PostgreSQL)"
    )
    plain_http: bool = Field(default=False, description="serve console/API over plain HTTP (loopback only)")
    heartbeat_interval: int = Field(default=10, ge=1, le=3600, description="agent heartbeat period, s")
    offline_after_missed: int = Field(default=3, ge=1, le=100, description="missed heartbeats -> offline")
    long_poll_seconds: int = Field(default=25, ge=1, le=120, description="agent command long-poll hold, s")
    scan_timeout_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="a scan not finished by then is timed_out"
    )
    scan_window_start_hour: int = Field(default=0, ge=0, le=23, description="daily scan window start")
    scan_window_hours: int = Field(default=4, ge=1, le=24, description="daily scan window length")
    quota_grace_days: int = Field(default=15, ge=0, le=3650, description="expired quotas keep protecting")
    alarm_retention_days: int = Field(
        default=30, ge=1, le=3650, description="alarms are kept this long after their last occurrence"
    )
    enrollment_token_hours: int = Field(
        default=24, ge=1, le=24 * 365, description="default enrollment token lifetime"
    )
    login_max_failures: int = Field(default=5, ge=1, le=1000, description="per user per window")
    login_failure_window_s: int = Field(
        default=300, ge=1, le=86400, description="window for login_max_failures, s"
    )
    session_hours: int = Field(default=12, ge=1, le=24 * 30, description="console/API login session lifetime")
    scheduler_enabled: bool = Field(default=True, description="run the job scheduler in this replica")
    scheduler_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the scheduler looks for due jobs, s"
    )
    instance_name: str = Field(default="", description="replica name in job locks; default host:pid")

    @field_validator("listen", "agent_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "hostward.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def offline_after_s(self) -> int:
        return self.heartbeat_interval * self.offline_after_missed

    @property
    def effective_agent_url(self) -> str:
        if self.agent_url:
            return self.agent_url.rstrip("/")
        host, port = split_host_port(self.agent_listen)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}"

    @property
    def ca_cert_path(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.data_dir / "pki" / "ca.key"

    @property
    def server_cert_path(self) -> Path:
        return self.data_dir / "pki" / "server.pem"

    @property
    def server_key_path(self) -> Path:
        return self.data_dir / "pki" / "server.key"


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError with the text otherwise."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
    try:
        port = int(port_text)
    except ValueError as exc:
        raise ValueError(f"expected HOST:PORT, got {value!r}") from exc
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {value!r}")
    return host, port


def load_settings(data_dir: Path, **overrides: Any) -> ManagerSettings:
    """Read ``data_dir/manager.toml`` (if present) and apply non-None overrides; ConfigError on bad values."""
    path = data_dir / CONFIG_NAME
    values: dict[str, Any] = {}
    if path.exists():
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), "<file>", f"not valid TOML: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["data_dir"] = data_dir
    try:
        return ManagerSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise ConfigError(str(path), key, err["msg"]) from exc


def write_settings_file(settings: ManagerSettings) -> Path:
    """Persist the values that differ from defaults (called by ``manager init``)."""
    path = settings.data_dir / CONFIG_NAME
    defaults = ManagerSettings(data_dir=settings.data_dir)
    lines = ["# hostward manager configuration; every key is documented in README.md#configuration"]
    for name in ManagerSettings.model_fields:
        if name == "data_dir":
            continue
        value = getattr(settings, name)
        if value == getattr(defaults, name):
            continue
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = str(value)
        else:
            rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{name} = {rendered}")
    path.write_text("\n".join(lines) + "\n")
    return path
