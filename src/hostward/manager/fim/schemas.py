"""FIM API types, and the shape of the ``fim_change`` records agents send."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hostward.manager.fim.models import FimChange
from hostward.manager.fim.policy import MAX_PATH, clean_path
from hostward.manager.schemas_common import ApiModel

MAX_ACCEPT_PATHS = 100
_SHORT_HASH = 12


class ProcessData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pid: int | None = Field(default=None, ge=0, le=2**31)
    exe: str = Field(default="", max_length=MAX_PATH)
    uid: int | None = None
    user: str = Field(default="", max_length=64)
    cmdline: str = Field(default="", max_length=8192)


class ChangeData(BaseModel):
    """``RecordEvent.data`` of topic ``fim_change`` (``hostward.agent.fim.diff.change_dict`` + extras).

    ``action`` is the agent's diff verb, ``operation`` what the operator filters on. The agent's
    ``baseline`` records (``operation`` ``accept``) confirm a baseline accepted from the console.
    """

    model_config = ConfigDict(extra="ignore")

    path: str = Field(min_length=1, max_length=MAX_PATH)
    action: Literal["added", "removed", "changed", "moved", "baseline"]
    operation: Literal["create", "delete", "move", "modify", "attributes", "accept"]
    label: Literal["change", "package_update"] = "change"
    type: str = Field(default="file", max_length=16)
    moved_from: str | None = Field(default=None, max_length=MAX_PATH)
    attributes: list[str] = Field(default_factory=list, max_length=32)
    old: dict[str, Any] = Field(default_factory=dict)
    new: dict[str, Any] = Field(default_factory=dict)
    package: dict[str, Any] | None = None
    process: ProcessData | None = None
    important: bool = False
    actor: str = Field(default="", max_length=64)

    @field_validator("attributes")
    @classmethod
    def _short_names(cls, value: list[str]) -> list[str]:
        return [str(v)[:32] for v in value]


class FimHostOut(BaseModel):
    server_id: str
    server_name: str
    region: str
    edition: str | None
    agent_status: str
    total: int
    alarmed: int
    package_updates: int
    accepted: int
    last_change_at: datetime | None
    last_change_path: str | None


class FimChangeOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    path: str
    moved_from: str | None
    change_type: str
    entry_type: str
    action: str
    important: bool
    attributes: list[str]
    old_hash: str | None
    new_hash: str | None
    old: dict[str, Any]
    new: dict[str, Any]
    description: str = ""
    classification: str
    package: dict[str, Any] | None
    process_pid: int | None
    process_exe: str
    process_user: str
    process_cmdline: str
    occurred_at: datetime
    received_at: datetime
    accepted_by: str | None
    accepted_at: datetime | None
    accept_command_id: str | None


class AcceptIn(BaseModel):
    server_id: str = Field(min_length=1, max_length=64)
    paths: list[str] = Field(min_length=1, max_length=MAX_ACCEPT_PATHS)
    remark: str = Field(default="", max_length=2000)

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(clean_path(p) for p in value))


class AcceptOut(BaseModel):
    server_id: str
    command_id: str
    paths: list[str]
    records_accepted: int
    alarms_handled: int


class FimStatisticsOut(BaseModel):
    servers_monitored: int
    servers_with_changes: int
    changes: int
    alarmed: int
    package_updates: int
    accepted: int
    last_change_at: datetime | None


def _short(value: Any) -> str:
    text = "—" if value in (None, "") else str(value)
    return text[:_SHORT_HASH] + "…" if len(text) > _SHORT_HASH + 4 else text


def _plain(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"id", "name"}:
        return f"{value['id']}({value['name']})" if value["name"] else str(value["id"])
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return "—" if value is None else str(value)


def describe(change: FimChange, *, hashes: bool = True) -> str:
    """One line for lists: ``sha256 ab12… → cd34…; mode 0644 → 0600`` (the reference's "change
    description"); ``hashes=False`` leaves the content hashes out (shown next to it)."""
    if change.action == "accept":
        return f"new baseline sha256 {_short(change.new_hash)}" if change.new_hash else "new baseline"
    if change.action in ("create", "delete"):
        entry = change.new if change.action == "create" else change.old
        parts = [f"sha256 {_short(entry.get('sha256'))}"] if entry.get("sha256") and hashes else []
        if "size" in entry:
            parts.append(f"size {entry['size']}")
        if "mode" in entry:
            parts.append(f"mode {entry['mode']}")
        verb = "created" if change.action == "create" else "deleted"
        return f"{verb}" + (f": {', '.join(parts)}" if parts else "")
    parts = []
    if change.moved_from:
        parts.append(f"from {change.moved_from}")
    for attr in change.attributes:
        if attr in ("ctime",):
            continue
        old, new = change.old.get(attr), change.new.get(attr)
        if attr == "sha256":
            if hashes:
                parts.append(f"sha256 {_short(old)} → {_short(new)}")
        elif attr in ("mtime",):
            parts.append("mtime changed")
        else:
            parts.append(f"{attr} {_plain(old)} → {_plain(new)}")
    return "; ".join(parts) or ", ".join(change.attributes) or "changed"


def change_out(change: FimChange, server_name: str = "") -> FimChangeOut:
    out = FimChangeOut.model_validate(change)
    return out.model_copy(update={"server_name": server_name, "description": describe(change)})
