"""The agent <-> manager protocol (HTTPS on the agent port, JSON bodies).

Endpoints (all under ``/agent/v1``):

- ``GET  /ca``                    CA certificate (PEM); the agent checks its SHA-256 fingerprint.
- ``POST /enroll``                EnrollRequest -> EnrollResponse (enrollment token in the body).
- ``POST /heartbeat``             HeartbeatRequest -> HeartbeatResponse (bearer agent key).
- ``GET  /commands?wait=S``       long poll -> CommandsResponse; returns as soon as a command is queued.
- ``POST /commands/{id}/result``  CommandResult.
- ``POST /events``                EventBatch -> EventBatchResponse (per-event ack by idempotency key).
- ``GET  /policy``                PolicyBundle for this server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hostward.wire.alarms import Severity
from hostward.wire.assets import AssetSnapshot

WIRE_VERSION = 1

MAX_EVENTS_PER_BATCH = 500
MAX_KEY_LENGTH = 128


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HostFacts(_Model):
    """What the agent knows about its host; sent at enrollment and in every heartbeat."""

    hostname: str = Field(max_length=255)
    machine_id: str = Field(min_length=1, max_length=128)
    ips: list[str] = Field(default_factory=list, max_length=256)
    os_name: str = Field(default="", max_length=128)
    os_version: str = Field(default="", max_length=128)
    kernel: str = Field(default="", max_length=128)
    arch: str = Field(default="", max_length=32)
    agent_version: str = Field(default="", max_length=32)
    timezone: str = Field(default="UTC", max_length=64, description="IANA name, or UTC")
    utc_offset_minutes: int = Field(default=0, ge=-24 * 60, le=24 * 60)


class DetectorHealth(_Model):
    """Health of one detector: a detector that silently stops matching is a defect, so it says so."""

    name: str = Field(max_length=64)
    status: Literal["running", "degraded", "failed", "disabled"]
    reason: str = Field(default="", max_length=1024)
    counters: dict[str, int] = Field(default_factory=dict)


class AgentHealth(_Model):
    cpu_percent: float = Field(default=0.0, ge=0)
    rss_bytes: int = Field(default=0, ge=0)
    outbox_depth: int = Field(default=0, ge=0)
    degraded: bool = False
    degraded_reason: str = Field(default="", max_length=1024)
    detectors: list[DetectorHealth] = Field(default_factory=list, max_length=64)


class EnrollRequest(_Model):
    wire_version: int = WIRE_VERSION
    token: str = Field(min_length=8, max_length=256)
    name: str | None = Field(default=None, max_length=128)
    facts: HostFacts
    # Proof of a previous credential: lets a re-installed agent keep its record when it still has it.
    previous_key: str | None = Field(default=None, max_length=256)


class EnrollResponse(_Model):
    server_id: str
    agent_key: str
    region: str
    heartbeat_interval: int


class HeartbeatRequest(_Model):
    facts: HostFacts
    health: AgentHealth = Field(default_factory=AgentHealth)
    policy_version: int | None = None


class HeartbeatResponse(_Model):
    server_time: datetime
    heartbeat_interval: int
    policy_version: int | None
    commands_pending: bool


CommandKind = Literal["scan", "apply_policy", "cancel_scan", "uninstall"]


class Command(_Model):
    """A unit of work for the agent; later capabilities add kinds (unblock_ip, isolate_file, ...)."""

    id: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class CommandsResponse(_Model):
    commands: list[Command]


class CommandResult(_Model):
    status: Literal["succeeded", "failed"]
    detail: str = Field(default="", max_length=4096)
    data: dict[str, Any] = Field(default_factory=dict)


class PolicyState(_Model):
    enabled: bool
    settings: dict[str, Any] = Field(default_factory=dict)


class PolicyBundle(_Model):
    """Everything the agent needs to configure its detectors."""

    version: int
    group_id: str | None
    group_name: str | None
    edition: str | None
    protection: bool = Field(description="False when protection is off: detect-only / idle")
    policies: dict[str, PolicyState] = Field(default_factory=dict)
    global_settings: dict[str, Any] = Field(default_factory=dict)


# ---- events (agent -> manager), each with an idempotency key ----------------------------------------


class _EventBase(_Model):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, description="idempotency key")
    occurred_at: datetime


class AlarmEvent(_EventBase):
    """A detection. Repeats with the same ``fingerprint`` are merged into one alarm with a count."""

    kind: Literal["alarm"] = "alarm"
    event_class: str = Field(max_length=64)
    severity: Severity | None = None
    title: str = Field(default="", max_length=512)
    fingerprint: str = Field(max_length=256)
    evidence: dict[str, Any] = Field(default_factory=dict)


class ScanProgressEvent(_EventBase):
    kind: Literal["scan_progress"] = "scan_progress"
    scan_id: str = Field(max_length=64)
    status: Literal["running", "succeeded", "failed", "cancelled"]
    progress: int = Field(ge=0, le=100)
    detail: str = Field(default="", max_length=4096)


class AssetsEvent(_EventBase):
    kind: Literal["assets"] = "assets"
    scan_id: str | None = Field(default=None, max_length=64)
    snapshot: AssetSnapshot


class RecordEvent(_EventBase):
    """A typed record for a capability's own table (blocked IPs, FIM changes, ...), keyed by ``topic``."""

    kind: Literal["record"] = "record"
    topic: str = Field(max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[AlarmEvent | ScanProgressEvent | AssetsEvent | RecordEvent, Field(discriminator="kind")]


class EventBatch(_Model):
    events: list[Event] = Field(max_length=MAX_EVENTS_PER_BATCH)


class RawEventBatch(_Model):
    """What the manager parses first: each event is then validated on its own, so one bad event is
    rejected with a reason while the rest of the batch is accepted."""

    events: list[Any] = Field(max_length=MAX_EVENTS_PER_BATCH)


class EventAck(_Model):
    key: str
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str = ""


class EventBatchResponse(_Model):
    acks: list[EventAck]
