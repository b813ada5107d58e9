"""Typed agent configuration: ``<state_dir>/agent.toml`` overlaid by command-line values.

Every key has a default; the file is optional. A bad value stops start-up with a ``ConfigError`` naming
the file (or "command line"), the dotted key and the reason.

Example ``agent.toml``::

    name = "web-01"
    log_sources = ["/var/log/auth.log"]
    max_outbox_events = 100000

    [budget]
    cpu_percent = 20     # average share of one CPU before the agent degrades
    rss_mb = 150         # resident memory cap; above it the agent exits so systemd restarts it
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hostward.core.errors import ConfigError

CONFIG_NAME = "agent.toml"
COMMAND_LINE = "command line"


class BudgetConfig(BaseModel):
    """Resource budget (SPEC §4.8)."""

    model_config = ConfigDict(extra="forbid")

    cpu_percent: float = Field(default=20.0, gt=0, le=400, description="% of one CPU, averaged")
    rss_mb: int = Field(default=150, ge=40, le=16384, description="RSS cap; exceeding it restarts the agent")
    check_interval_s: float = Field(default=5.0, gt=0, le=300, description="watchdog sampling period")
    cpu_window_s: float = Field(default=60.0, gt=0, le=3600, description="CPU averaging window")


class AgentConfig(BaseModel):
    """Validated agent settings; build with ``load_config``."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(description="credentials, outbox and caches (created 0700)")
    name: str | None = Field(default=None, max_length=128, description="agent name (several per host)")
    manager_url: str | None = Field(default=None, description="override the agent URL saved at enrollment")
    heartbeat_interval: int = Field(
        default=10, ge=1, le=3600, description="seconds; used until the manager sends its own interval"
    )
    log_sources: list[str] = Field(default_factory=list, description="extra log files to follow")
    max_outbox_events: int = Field(default=100_000, ge=100, le=10_000_000)
    event_batch_size: int = Field(default=500, ge=1, le=500)
    command_wait_s: int = Field(default=25, ge=0, le=120, description="long-poll hold asked of the manager")
    request_timeout_s: float = Field(default=15.0, gt=0, le=300)
    backoff_base_s: float = Field(default=1.0, gt=0, le=60)
    backoff_cap_s: float = Field(default=60.0, gt=0, le=3600)
    accounts_interval_s: int = Field(
        default=3600, ge=10, le=7 * 86400, description="account check period unless the policy sets one"
    )
    first_accounts_check_s: int = Field(
        default=60, ge=1, le=3600, description="first account check after start (against the saved baseline)"
    )
    host_root: Path = Field(default=Path("/"), description="root of the host filesystem (containers: /host)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @field_validator("manager_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("https://"):
            raise ValueError("must start with https:// (the agent channel is always TLS)")
        return value.rstrip("/")

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agent.db"

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"

    @property
    def config_path(self) -> Path:
        return self.state_dir / CONFIG_NAME


def load_config(state_dir: Path | str, overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Read ``<state_dir>/agent.toml`` (optional) and apply ``overrides`` (``None`` values are ignored)."""
    state = Path(state_dir)
    path = state / CONFIG_NAME
    file_values: dict[str, Any] = {}
    if path.exists():
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "(syntax)", str(exc)) from exc
        except OSError as exc:
            raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from exc
        if "state_dir" in file_values:
            raise ConfigError(str(path), "state_dir", "cannot be set inside the state directory's own file")
    cli_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    merged: dict[str, Any] = {**file_values, **cli_values, "state_dir": state}
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc) or "(root)"
        source = COMMAND_LINE if loc and loc[0] in cli_values else str(path)
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        raise ConfigError(source, key, reason) from exc
