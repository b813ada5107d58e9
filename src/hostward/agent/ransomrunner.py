"""Ransomware prevention inside the agent: ``bundle.global_settings["ransomware"]`` drives the baits, a
``RansomwareMonitor`` and the snapshots of the protected directories.

- Runs when the bundle has protection on, the premium or wtp edition and ``ransomware.enabled``.
- Baits are planted at once and re-planted every 12 h (or when one has gone); the monitor is restarted
  around a rotation so the agent's own replanting is never mistaken for an attack. Turning the
  capability off removes the baits; stopping the agent leaves them in place.
- ``alarm_and_isolate``: the monitor kills the process tree (``ProcessKiller``) and moves its program
  into the agent's quarantine vault (the one the malware capability uses, ``<state_dir>/quarantine``).
- Snapshots under ``<state_dir>/ransomware-snapshots`` every ``snapshot_interval_h`` hours, keeping
  ``snapshot_keep``; ``ransomware_restore {snapshot_id, path?}`` puts a snapshot back.
- Inside a directory web tamper protection locks, baits are written and removed through the WTP runner
  (``WtpRunner.bait_access``): the parent's lock is lifted for the write and the bait paths are left
  out of the WTP backup, lock and rollback, so a bait stays writable (an encryptor touching it is caught
  here) while the web content around it stays locked.
- Records: ``ransomware_status`` {state, message, baits} on every change, ``ransomware_snapshot``
  {snapshot_id, taken_at, files, bytes, kept} per snapshot; alarms ``ransomware_0001`` / ``0002``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostward.agent.commands import failed, succeeded
from hostward.agent.controlloop import ControlLoop
from hostward.agent.enforcers.process import ProcessKiller
from hostward.agent.enforcers.quarantine import QuarantineVault
from hostward.agent.errors import AgentError
from hostward.agent.ransomware import (
    Bait,
    PolicyError,
    RansomwareMonitor,
    RansomwarePolicy,
    SnapshotStore,
    rotate_if_due,
    validate,
)
from hostward.agent.ransomware.bait import load_state, remove, save_state
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.wire import AlarmEvent, Command, CommandResult, DetectorHealth, PolicyBundle, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.commands import CommandDispatcher
    from hostward.agent.malwarerunner import MalwareRunner
    from hostward.agent.runtime import Agent
    from hostward.agent.wtprunner import WtpRunner

log = logging.getLogger(__name__)

SETTINGS_KEY = "ransomware"
EDITIONS = ("premium", "wtp")
BAIT_STATE = "ransomware-baits.json"
SNAPSHOT_DIR = "ransomware-snapshots"
STATUS_TOPIC = "ransomware_status"
SNAPSHOT_TOPIC = "ransomware_snapshot"
RESTORE_COMMAND = "ransomware_restore"
DEFAULT_INTERVAL_H = 24
POLL_S = 30.0
MAX_PATHS_IN_RESULT = 200


@dataclass(frozen=True)
class Desired:
    policy: RansomwarePolicy | None
    interval_s: float = DEFAULT_INTERVAL_H * 3600.0
    key: str = ""


def parse_policy(raw: Any) -> tuple[RansomwarePolicy, float]:
    """``global_settings["ransomware"]["policy"]`` → (validated policy, snapshot interval in seconds)."""
    if not isinstance(raw, dict):
        raise PolicyError("policy: expected an object")

    def strings(key: str) -> list[str]:
        value = raw.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{key}: expected a list of strings")
        return list(value)

    policy = RansomwarePolicy(
        protected_dirs=strings("protected_dirs"),
        excluded_dirs=strings("excluded_dirs"),
        action=str(raw.get("action") or "alarm"),
        bait=bool(raw.get("bait", True)),
    )
    if raw.get("file_types"):
        policy.file_types = strings("file_types")
    try:
        if raw.get("rate_files") is not None:
            policy.rate_files = int(raw["rate_files"])
        if raw.get("rate_window_s") is not None:
            policy.rate_window_s = float(raw["rate_window_s"])
        policy.snapshot_keep = int(raw.get("snapshot_keep") or 7)
        interval_h = float(raw.get("snapshot_interval_h") or DEFAULT_INTERVAL_H)
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"policy: {exc}") from exc
    if interval_h <= 0:
        raise PolicyError("snapshot_interval_h must be > 0")
    return validate(policy), interval_h * 3600.0


def desired_from(bundle: PolicyBundle) -> Desired:
    raw = bundle.global_settings.get(SETTINGS_KEY)
    if not isinstance(raw, dict) or not raw.get("enabled"):
        return Desired(None)
    if not (bundle.protection and bundle.edition in EDITIONS):
        return Desired(None)
    policy, interval = parse_policy(raw.get("policy") or {})
    return Desired(policy, interval, json.dumps(raw.get("policy"), sort_keys=True, default=str))


class RansomRunner(ControlLoop):
    """The agent's ransomware component (see the module docstring)."""

    name = "ransomware"
    poll_s = POLL_S

    def __init__(
        self,
        state_dir: Path,
        outbox: Outbox,
        clock: Clock,
        *,
        notify: Callable[[], None] = lambda: None,
        killer: ProcessKiller | None = None,
        vault: QuarantineVault | None = None,
        use_fanotify: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        super().__init__(outbox, clock, notify)
        self.bait_state = str(self.state_dir / BAIT_STATE)
        self.snap_root = str(self.state_dir / SNAPSHOT_DIR)
        self.killer = killer
        self.vault = vault
        self.use_fanotify = use_fanotify
        self.monitor: RansomwareMonitor | None = None
        self.isolator_source: Callable[[], Any] = lambda: None
        self.wtp: WtpRunner | None = None  # web tamper protection, for baits in locked directories
        self.snapshots: SnapshotStore | None = None
        self.baits: list[Bait] = []
        self._desired: Desired | None = None
        self._applied: Desired | None = None
        self._error = ""
        self._last_status: dict[str, Any] | None = None
        self.counters: dict[str, int] = {
            "alarms": 0,
            "snapshots": 0,
            "rotations": 0,
            "restores": 0,
            "errors": 0,
        }

    @classmethod
    def for_agent(
        cls, agent: Agent, *, wtp: WtpRunner | None = None, malware: MalwareRunner | None = None
    ) -> RansomRunner:
        """The runner of a running agent: the vault and killer of its malware component (one vault per
        agent, and isolations show on the Isolated Files page through its ``isolated_file`` records)."""
        runner = cls(agent.cfg.state_dir, agent.outbox, agent.clock, notify=lambda: agent.outbox_ready.set())
        if malware is not None:
            runner.isolator_source = lambda: malware.isolator
        runner.wtp = wtp
        return runner

    def _access(self, path: str) -> AbstractContextManager[object]:
        """Write access to a bait path (through web tamper protection when it runs here)."""
        return self.wtp.bait_access(path) if self.wtp is not None else nullcontext()

    def _restoring(self, tops: Iterable[str]) -> AbstractContextManager[object]:
        """A snapshot restore into directories web tamper protection locks goes through WTP."""
        return (
            self.wtp.maintenance("ransomware snapshot restore", tops)
            if self.wtp is not None
            else nullcontext()
        )

    def _baits_changed(self) -> None:
        if self.wtp is not None:
            self.wtp.bait_paths({b.path for b in self.baits})

    def _enforcers(self) -> tuple[ProcessKiller, QuarantineVault | None]:
        isolator = self.isolator_source()
        if isolator is not None and self.vault is None:
            self.vault = getattr(isolator, "vault", None)
            self.killer = getattr(isolator, "killer", None) or self.killer
        if self.killer is None:
            self.killer = ProcessKiller(ledger_path=self.state_dir / "kills.db")
        if self.vault is None:
            try:
                self.vault = QuarantineVault(self.state_dir / "quarantine", protected=[str(self.state_dir)])
            except (AgentError, OSError) as exc:
                log.error("ransomware: quarantine vault unavailable: %s", exc)
        return self.killer, self.vault

    def register(self, dispatcher: CommandDispatcher) -> None:
        dispatcher.register(RESTORE_COMMAND, self.restore_command)

    # ---- lifecycle ------------------------------------------------------------------------------

    def _teardown(self) -> None:
        # Stop watching (the baits stay where they are until the capability is turned off).
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        self._applied = None

    # ---- configuration --------------------------------------------------------------------------

    def configure(self, bundle: PolicyBundle | None) -> None:
        if bundle is None:
            return
        try:
            desired = desired_from(bundle)
        except AgentError as exc:
            self._error = f"ransomware policy refused: {exc}"
            log.warning("ransomware: %s", self._error)
            self._emit_status("error", self._error)
            return
        self._error = ""
        # No lock: the control thread may hold it for a whole snapshot, and this runs on the heartbeat path.
        self._desired = desired
        self.wake()

    @property
    def enabled(self) -> bool:
        return self._desired is not None and self._desired.policy is not None

    def _apply(self) -> None:
        desired = self._desired
        if desired is None or desired == self._applied:
            return
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        if desired.policy is None:
            _, baits = load_state(self.bait_state)
            if baits or self._applied is not None:
                remove(baits, self._access)
                if os.path.exists(self.bait_state):
                    save_state(self.bait_state, time.time(), [])
                self.baits = []
                self._baits_changed()
                self._emit_status("disabled", "")
            self._applied = desired
            return
        policy = desired.policy
        previous = self._applied
        self._applied = desired
        self.snapshots = SnapshotStore(self.snap_root, keep=policy.snapshot_keep, clock=self.clock)
        # a new policy (or a restart with another one) replants: the old baits may lie elsewhere
        force = previous is not None and previous.key != desired.key
        self._start_monitor(policy, force_rotate=force)

    def _start_monitor(self, policy: RansomwarePolicy, *, force_rotate: bool = False) -> None:
        message = ""
        try:
            every = 0.0 if force_rotate else None
            if every is None:
                self.baits, rotated = rotate_if_due(policy, self.bait_state, time.time(), access=self._access)
            else:
                self.baits, rotated = rotate_if_due(
                    policy, self.bait_state, time.time(), every_s=every, access=self._access
                )
            self._baits_changed()
            if rotated:
                self.counters["rotations"] += 1
        except OSError as exc:
            message = f"cannot plant bait files: {exc}"
            log.error("ransomware: %s", message)
            self.baits = []
        killer, vault = self._enforcers()
        monitor = RansomwareMonitor(
            policy,
            baits=self.baits,
            killer=killer,
            vault=vault,
            on_event=self._on_event,
            clock=self.clock,
            use_fanotify=self.use_fanotify,
        )
        try:
            monitor.start()
        except OSError as exc:
            self._emit_status("error", f"cannot watch the protected directories: {exc}")
            return
        self.monitor = monitor
        if self.use_fanotify and not monitor.fanotify_ok:
            message = "; ".join(
                m for m in (message, "fanotify unavailable: alarms cannot name the process") if m
            )
        self._emit_status("protected", message)

    # ---- periodic duties ------------------------------------------------------------------------

    def _tick(self) -> None:
        applied = self._applied
        if applied is None or applied.policy is None or self.monitor is None:
            return
        policy = applied.policy
        planted_at, baits = load_state(self.bait_state)
        due = policy.bait and (
            time.time() - planted_at >= 12 * 3600 or not all(os.path.exists(b.path) for b in baits)
        )
        if due:
            # stopped first: removing the old baits must not look like an attack
            self.monitor.stop()
            self.monitor = None
            self._start_monitor(policy)
        if self.snapshots is not None and self.snapshots.due(self.clock.now(), applied.interval_s):
            self.take_snapshot()

    def take_snapshot(self) -> dict[str, Any] | None:
        """Snapshot the protected directories now and report it (``ransomware_snapshot``)."""
        applied, store = self._applied, self.snapshots
        if applied is None or applied.policy is None or store is None:
            return None
        bait_paths = {b.path for b in self.baits}
        try:
            info = store.take(applied.policy, skip=lambda p: p in bait_paths)
        except (AgentError, OSError) as exc:
            log.error("ransomware: snapshot failed: %s", exc)
            self.counters["errors"] += 1
            self._emit_status("protected", f"snapshot failed: {exc}")
            return None
        self.counters["snapshots"] += 1
        data = {
            "snapshot_id": info.id,
            "taken_at": info.taken_at,
            "files": info.files,
            "bytes": info.bytes,
            "kept": [s.id for s in store.list()],
        }
        self._put(
            RecordEvent(
                key=f"rw-snap-{info.id}", occurred_at=self.clock.now(), topic=SNAPSHOT_TOPIC, data=data
            )
        )
        return data

    # ---- events ---------------------------------------------------------------------------------

    def _on_event(self, record: dict[str, Any], alarm: AlarmEvent) -> None:
        self.counters["alarms"] += 1
        self._put(alarm)
        isolator = self.isolator_source()
        killed: tuple[int, ...] = ()
        for step in record.get("response") or []:
            if step.get("action") == "kill" and step.get("ok"):
                killed = tuple(int(p) for p in step.get("killed") or [])
            if step.get("action") == "isolate" and step.get("ok") and isolator is not None and self.vault:
                try:
                    entry = self.vault.get(str(step["entry_id"]))
                    self._put(isolator.record(entry, "isolated", "auto", killed))
                except (AgentError, OSError, KeyError) as exc:
                    log.warning("ransomware: no isolated_file record: %s", exc)

    def _emit_status(self, state: str, message: str) -> None:
        data = {"state": state, "message": message[:2000], "baits": len(self.baits)}
        if data == self._last_status:
            return
        self._last_status = data
        self._put(
            RecordEvent(
                key=f"rw-status-{new_id()}", occurred_at=self.clock.now(), topic=STATUS_TOPIC, data=data
            )
        )

    # ---- restore --------------------------------------------------------------------------------

    def restore_command(self, command: Command) -> CommandResult:
        """``ransomware_restore {snapshot_id, path?}`` → ``{snapshot_id, restored, displaced, ...}``."""
        snap_id = command.payload.get("snapshot_id")
        under = command.payload.get("path")
        if not isinstance(snap_id, str) or not snap_id or (under is not None and not isinstance(under, str)):
            return failed("ransomware_restore needs payload {snapshot_id, path?}")
        store = self.snapshots or (SnapshotStore(self.snap_root) if os.path.isdir(self.snap_root) else None)
        if store is None:
            return failed("no ransomware snapshots on this server", snapshot_id=snap_id)
        bait_paths = {b.path for b in self.baits}
        try:
            with self._lock:  # not while a snapshot is being taken (and pruned)
                result = store.restore(
                    snap_id, keep=lambda p: p in bait_paths, under=under, around=self._restoring
                )
        except (AgentError, OSError) as exc:
            return failed(f"restore of snapshot {snap_id} failed: {exc}", snapshot_id=snap_id)
        self.counters["restores"] += 1
        return succeeded(
            f"snapshot {snap_id}: {len(result.restored)} files restored, {len(result.displaced)} moved aside",
            snapshot_id=snap_id,
            restored=len(result.restored),
            displaced=len(result.displaced),
            restored_paths=result.restored[:MAX_PATHS_IN_RESULT],
            displaced_paths=result.displaced[:MAX_PATHS_IN_RESULT],
        )

    # ---- health ---------------------------------------------------------------------------------

    def health(self) -> list[DetectorHealth]:
        if not self.enabled and not self._error:
            return []
        counters = {**self.counters, "baits": len(self.baits)}
        if self._error or self.monitor is None:
            reason = self._error or "the ransomware monitor is not running"
            return [
                DetectorHealth(name="ransomware", status="degraded", reason=reason[:1024], counters=counters)
            ]
        status = "running"
        reason = ""
        if self.use_fanotify and not self.monitor.fanotify_ok:
            status, reason = "degraded", "fanotify unavailable: alarms cannot name the process"
        return [DetectorHealth(name="ransomware", status=status, reason=reason, counters=counters)]
