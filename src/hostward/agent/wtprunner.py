"""Web tamper protection inside the agent: ``bundle.global_settings["wtp"]`` drives a ``WtpGuard``.

- WTP runs when the bundle has protection on, the ``wtp`` edition and ``wtp.enabled``. Turning it off
  (or a bundle without it) unlocks everything through ``WtpGuard.disable()``; the backup stays.
- A change of the protected directories or the backup path rebuilds the backup and re-locks; a change
  of the schedule or the privileged processes is applied in place; ``suspended`` flips suspend/resume.
- The applied configuration is kept in ``<state_dir>/wtp-state.json``: after a restart with the same
  configuration the guard reloads the backup on disk (``load_backup``) instead of capturing the tree
  again, then reconciles the whole tree (a change made while the agent was down is rolled back, never
  baked into the backup). A bundle that turned WTP off while the agent was stopped still unlocks.
- Records: ``wtp_status`` whenever the status changes, ``wtp_tamper`` for every rollback (with the
  ``wtp_0001`` alarm). Scheduled windows are checked once a minute in server-local time.
- ``privileged(exe)`` is what ``hostward wtp exec`` uses through the control socket (``wtpctl``). An
  open session is marked in ``<state_dir>/wtp-session.json``: when the agent stops during a session the
  backup is refreshed (the privileged command's changes so far are kept) before the lock is set again;
  when it died during one, the next start captures a fresh backup instead of reloading the old one
  (which would roll the privileged update back).
- Ransomware bait files inside protected trees (``bait_access``, ``bait_paths``; the ransomware
  runner's ``ransomware-baits.json`` at start) are left out of the backup, the lock and the rollback.
- Scans: the ``wtp`` scan kind and every comprehensive scan reconcile the whole tree.

Helpers: ``wtpsettings`` (bundle → ``WtpConfig``), ``wtprunguard`` (the guard subclass: restart from the
backup, privileged writes), ``wtpctl`` (the control socket), ``wtpremote`` (the manager's copy).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostward.agent.controlloop import ControlLoop
from hostward.agent.errors import AgentError
from hostward.agent.scan import CheckUnavailable, ScanJob
from hostward.agent.transport.outbox import Outbox
from hostward.agent.wtp import WtpConfig, WtpConfigError, WtpGuard, WtpStatus
from hostward.agent.wtp.privileged import NotPrivileged, resolve_exe
from hostward.agent.wtprunguard import RunnerGuard
from hostward.agent.wtpsettings import (
    SETTINGS_KEY,
    WTP_EDITION,
    Desired,
    build_key,
    desired_from,
    parse_config,
)
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.wire import AlarmEvent, DetectorHealth, PolicyBundle, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.commands import CommandDispatcher
    from hostward.agent.runtime import Agent
    from hostward.agent.scan import ScanRunner
    from hostward.agent.wtpremote import RemoteBackup

log = logging.getLogger(__name__)

STATE_NAME = "wtp-state.json"
SESSION_NAME = "wtp-session.json"
STATUS_TOPIC = "wtp_status"
TAMPER_TOPIC = "wtp_tamper"
SCAN_KIND = "wtp"
POLL_S = 5.0
RETRY_S = 300.0

Uploader = Callable[[RunnerGuard], str]

__all__ = [
    "SETTINGS_KEY",
    "WTP_EDITION",
    "RunnerGuard",
    "WtpRunner",
    "build_key",
    "desired_from",
    "parse_config",
]


class WtpRunner(ControlLoop):
    """The agent's WTP component (see the module docstring); ``start``/``stop`` bracket its thread."""

    name = "wtp"
    poll_s = POLL_S

    def __init__(
        self,
        state_dir: Path,
        outbox: Outbox,
        clock: Clock,
        *,
        notify: Callable[[], None] = lambda: None,
        uploader: Uploader | None = None,
        use_fanotify: bool = True,
        local_now: Callable[[], datetime] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_path = self.state_dir / STATE_NAME
        self.session_path = self.state_dir / SESSION_NAME
        super().__init__(outbox, clock, notify)
        self._baits: set[str] = set()
        self.uploader = uploader
        self.use_fanotify = use_fanotify
        self.local_now = local_now or (lambda: clock.now().astimezone())
        self.guard: RunnerGuard | None = None
        self.remote: RemoteBackup | None = None
        self._desired: Desired | None = None  # None until the first bundle
        self._applied_key: str | None = None
        self._applied_raw: dict[str, Any] | None = None
        self._error = ""
        self._retry_at = 0.0
        self._last_minute: tuple[int, int, int, int, int] | None = None
        self._last_status: dict[str, Any] | None = None
        self._uploaded_at: str | None = None
        self.remote_message = ""
        self.counters: dict[str, int] = {"tampers": 0, "rebuilds": 0, "reloads": 0, "errors": 0, "uploads": 0}

    @classmethod
    def for_agent(cls, agent: Agent) -> WtpRunner:
        from hostward.agent.wtpremote import RemoteBackup

        remote = RemoteBackup(agent.new_client)
        runner = cls(
            agent.cfg.state_dir,
            agent.outbox,
            agent.clock,
            notify=lambda: agent.outbox_ready.set(),
            uploader=remote.upload,
        )
        runner.remote = remote
        return runner

    def register(self, dispatcher: CommandDispatcher, scans: ScanRunner) -> None:
        """The ``wtp`` scan check and the ``wtp_remote_restore`` command."""
        from hostward.agent.wtpremote import RESTORE_COMMAND, restore_command

        scans.add_check(SCAN_KIND, self.scan_check)
        if self.remote is not None:
            dispatcher.register(RESTORE_COMMAND, restore_command(self, self.remote))

    # ---- lifecycle ------------------------------------------------------------------------------

    def _teardown(self) -> None:
        # Stop watching; the locks stay (the files remain protected while the agent is down).
        if self.guard is not None:
            self.guard.stop()
            if self.guard._privileged:
                self._end_open_session(self.guard)
            self.guard = None
        self._applied_key = None

    # ---- configuration --------------------------------------------------------------------------

    def configure(self, bundle: PolicyBundle | None) -> None:
        """Take a new bundle (cheap, any thread): the control thread applies it."""
        if bundle is None:
            return
        try:
            desired = desired_from(bundle)
            self._error = ""
        except WtpConfigError as exc:
            # The manager validates the configuration; an older manager or a hand-edited bundle may not.
            # Whatever protection is running stays as it is.
            self._error = f"web tamper protection configuration refused: {exc}"
            log.warning("wtp: %s", self._error)
            self._emit_status({"state": "error", "message": self._error[:2000], "dirs": [], "backup": {}})
            return
        # No lock: the control thread may hold it for a whole backup, and this runs on the heartbeat path.
        self._desired = desired
        self._retry_at = 0.0
        self.wake()

    @property
    def enabled(self) -> bool:
        return self._desired is not None and self._desired.config is not None

    def _apply(self) -> None:
        desired = self._desired
        if desired is None:
            return
        if desired.config is None:
            self._turn_off()
            return
        key = build_key(desired.config)
        if self.guard is not None and key == self._applied_key:
            self._update_in_place(desired.config)
            self._applied_raw = desired.raw
            self._save_state(key, desired.raw)
            return
        if self._error and time.monotonic() < self._retry_at:
            return
        self._turn_on(desired, key)

    def _turn_on(self, desired: Desired, key: str) -> None:
        assert desired.config is not None
        if self.guard is not None:
            self.guard.disable()
            self.guard = None
        guard = RunnerGuard(
            desired.config, clock=self.clock, on_event=self._on_tamper, use_fanotify=self.use_fanotify
        )
        guard.foreign = self._known_baits()
        saved = self._load_state()
        manifest = os.path.join(desired.config.backup_path, "manifest.json")
        # the agent died during a `wtp exec` session: the tree holds the privileged update, the
        # backup on disk does not; a fresh capture keeps the update
        interrupted = self.session_path.exists()
        try:
            if saved.get("key") == key and os.path.exists(manifest) and not interrupted:
                status = guard.enable_from_backup()
                self.counters["reloads"] += 1
            else:
                status = guard.enable()
                self.counters["rebuilds"] += 1
        except (AgentError, OSError, ValueError) as exc:
            guard.stop()
            status = WtpStatus(state="error", message=f"cannot enable web tamper protection: {exc}")
        if status.state == "error":
            self._error = status.message
            self._retry_at = time.monotonic() + RETRY_S
            log.error("wtp: %s", status.message)
            self._emit_status(self._status_dict(guard, status))
            self.guard = None
            self._applied_key = None
            return
        self._error = ""
        if interrupted:
            self._session_mark(False)
        self.guard = guard
        self._applied_key = key
        self._applied_raw = desired.raw
        self._save_state(key, desired.raw)
        self._last_minute = None  # check the schedule now
        self._tick()
        self.publish()

    def _update_in_place(self, new: WtpConfig) -> None:
        guard = self.guard
        assert guard is not None
        cfg = guard.config
        cfg.schedule = new.schedule
        cfg.privileged = new.privileged
        cfg.privileged_children = new.privileged_children
        changed = False
        for d, want in zip(cfg.dirs, new.dirs, strict=True):
            if d.suspended == want.suspended:
                continue
            changed = True
            if want.suspended:
                guard.suspend(d.path)
            else:
                guard.resume(d.path)
        if changed:
            self.publish()

    def _turn_off(self) -> None:
        guard = self.guard
        if guard is None:
            saved = self._load_state()
            if not saved.get("config"):
                return
            # WTP was turned off while the agent was stopped: the files are still locked
            try:
                guard = RunnerGuard(parse_config(saved["config"]), clock=self.clock, use_fanotify=False)
            except WtpConfigError as exc:
                log.error("wtp: cannot unlock with the saved configuration: %s", exc)
                self._clear_state()
                return
        guard.disable()
        self.guard = None
        self._applied_key = None
        self._clear_state()
        self._emit_status({"state": "disabled", "message": "", "dirs": [], "backup": {}})

    # ---- saved state ----------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_state(self, key: str, raw: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"key": key, "config": raw}))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("wtp: cannot save %s: %s", self.state_path, exc)

    def _clear_state(self) -> None:
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass

    # ---- periodic duties ------------------------------------------------------------------------

    def _tick(self) -> None:
        guard = self.guard
        if guard is None:
            return
        now = self.local_now()
        minute = (now.year, now.month, now.day, now.hour, now.minute)
        if minute != self._last_minute:
            self._last_minute = minute
            try:
                guard.apply_schedule(now)
            except (AgentError, OSError) as exc:
                log.error("wtp: scheduled window change failed: %s", exc)
                self.counters["errors"] += 1
            self.publish()
        self._maybe_upload()

    def _maybe_upload(self) -> None:
        guard, desired = self.guard, self._desired
        if guard is None or desired is None or not desired.remote_backup or self.uploader is None:
            return
        built = guard.status().backup_at
        if built is None or built == self._uploaded_at or guard.status().state != "protected":
            return
        try:
            self.remote_message = self.uploader(guard)
            self._uploaded_at = built
            self.counters["uploads"] += 1
        except (AgentError, OSError) as exc:
            self.remote_message = f"remote backup failed: {exc}"
            log.warning("wtp: %s", self.remote_message)

    # ---- records --------------------------------------------------------------------------------

    def _on_tamper(self, record: dict[str, Any], alarm: AlarmEvent) -> None:
        # Called on the guard's watcher thread.
        self.counters["tampers"] += 1
        event = RecordEvent(
            key=f"wtp-tamper-{new_id()}", occurred_at=self.clock.now(), topic=TAMPER_TOPIC, data=dict(record)
        )
        self._put(event, alarm)

    @staticmethod
    def _status_dict(guard: WtpGuard, status: WtpStatus) -> dict[str, Any]:
        manifest = guard.manifest() if isinstance(guard, RunnerGuard) else {}
        files = [(p, e) for p, e in manifest.items() if e.kind == "file"]
        dirs = []
        for d in guard.config.dirs:
            if status.state in ("disabled", "error"):
                state = status.state
            elif d.suspended:
                state = "suspended"
            elif status.state == "unprotected_window":
                state = "unprotected_window"
            elif not status.immutable.get(d.path, False):
                state = "watch_only"
            else:
                state = "protected"
            count = sum(1 for p, _ in files if guard.config.dir_for(p) is d)
            dirs.append({"path": d.path, "state": state, "files": count})
        return {
            "state": status.state,
            "message": status.message[:2000],
            "dirs": dirs,
            "backup": {
                "files": len(files),
                "bytes": sum(e.size for _, e in files),
                "built_at": status.backup_at,
            },
        }

    def publish(self) -> None:
        """Send a ``wtp_status`` record when the status differs from the last one sent."""
        guard = self.guard
        if guard is None:
            return
        data = self._status_dict(guard, guard.status())
        if self.remote_message.startswith("remote backup failed"):
            data["message"] = "; ".join(m for m in (data["message"], self.remote_message) if m)[:2000]
        self._emit_status(data)

    def _emit_status(self, data: dict[str, Any]) -> None:
        if data == self._last_status:
            return
        self._last_status = data
        self._put(
            RecordEvent(
                key=f"wtp-status-{new_id()}", occurred_at=self.clock.now(), topic=STATUS_TOPIC, data=data
            )
        )

    # ---- privileged sessions (hostward wtp exec) -----------------------------------------------

    @contextmanager
    def privileged(self, exe: str, session_pid: int | None = None) -> Iterator[RunnerGuard | None]:
        """Lift the lock while ``exe`` (privileged) runs; refresh the backup and re-lock when it ends.

        Yields None when WTP is not on here (nothing is locked). Raises ``NotPrivileged``.
        """
        guard = self.guard
        if guard is None:
            yield None
            return
        real = resolve_exe(exe)
        allowed = {os.path.realpath(p) for p in guard.config.privileged}
        if real not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise NotPrivileged(f"{real} is not a privileged process (allowed: {names})")
        with self._session(guard, real, session_pid):
            yield guard

    @contextmanager
    def _session(self, guard: RunnerGuard, what: str, session_pid: int | None) -> Iterator[None]:
        self._session_mark(True, exe=what)
        try:
            with guard.privileged(session_pid):
                yield
            with guard._lock:
                if not guard._privileged:  # the backup holds the update now
                    self._session_mark(False)
        finally:
            self.publish()
            self.wake()  # the remote copy follows the refreshed backup

    def touches(self, paths: Iterable[str]) -> bool:
        """Whether web tamper protection is on for any of ``paths``, or for a directory below one."""
        guard = self.guard
        if guard is None:
            return False
        norm = [os.path.normpath(p) for p in paths]
        return any(
            guard.config.dir_for(p) is not None
            or any(d.path.startswith(p.rstrip("/") + "/") for d in guard.config.dirs)
            for p in norm
        )

    @contextmanager
    def maintenance(self, what: str, paths: Iterable[str]) -> Iterator[None]:
        """The agent itself rewrites files below ``paths`` (a ransomware snapshot restore): where WTP
        protects them, the lock is lifted for the agent's own writes (other named writers are still
        rolled back), then the backup is refreshed with the result and everything locked again — as
        for a ``wtp exec`` session, including the agent dying half-way (the next start captures
        afresh). Elsewhere this does nothing."""
        guard = self.guard
        if guard is None or not self.touches(paths):
            yield
            return
        log.info("wtp: lock lifted for %s", what)
        with self._session(guard, what, None):
            yield

    def _session_mark(self, on: bool, exe: str = "") -> None:
        try:
            if on:
                self.session_path.write_text(json.dumps({"exe": exe, "at": self.clock.now().isoformat()}))
            else:
                self.session_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("wtp: session mark %s: %s", self.session_path, exc)

    def _end_open_session(self, guard: RunnerGuard) -> None:
        """The agent stops while a `wtp exec` session is open: keep what the privileged command changed
        so far (new backup), then lock again; the command's later writes are refused by the lock."""
        with guard._lock:
            try:
                guard.refresh_backup()
                self._session_mark(False)
            except (AgentError, OSError) as exc:
                # the mark stays: the next start captures the tree afresh
                log.error("wtp: backup refresh at stop during a privileged session failed: %s", exc)
            finally:
                guard._lock_all()

    # ---- ransomware bait files ------------------------------------------------------------------

    def _known_baits(self) -> set[str]:
        from hostward.agent.ransomrunner import BAIT_STATE
        from hostward.agent.ransomware.bait import load_state

        _, baits = load_state(str(self.state_dir / BAIT_STATE))
        return {os.path.normpath(b.path) for b in baits} | self._baits

    @contextmanager
    def bait_access(self, path: str) -> Iterator[None]:
        """Write access for the ransomware runner to a bait file (see ``WtpGuard.place``)."""
        with self._lock:  # not while a guard is being built
            self._baits.add(os.path.normpath(path))
            guard = self.guard
            if guard is None:
                yield
                return
            with guard.place(path):
                yield

    def bait_paths(self, paths: set[str]) -> None:
        """The current bait files (after a rotation): only these stay outside protection."""
        with self._lock:
            self._baits = {os.path.normpath(p) for p in paths}
            guard = self.guard
            if guard is not None:
                with guard._lock:
                    guard.foreign = set(self._baits)

    # ---- remote restore ---------------------------------------------------------------------------

    def restore_path(self, path: str) -> RunnerGuard:
        """The running guard after checking ``path`` is in its backup (``AgentError`` otherwise)."""
        guard = self.guard
        if guard is None:
            raise AgentError("web tamper protection is not enabled on this server")
        if os.path.normpath(path) not in guard.manifest():
            raise AgentError(f"{path}: not in the web tamper protection backup")
        return guard

    # ---- scans and health -------------------------------------------------------------------------

    def scan_check(self, job: ScanJob) -> str:
        """The ``wtp`` scan check (and part of every comprehensive scan): reconcile the whole tree."""
        with self._lock:
            self._apply()
            guard = self.guard
        if guard is None:
            raise CheckUnavailable("web tamper protection is off on this server")
        before = self.counters["tampers"]
        guard.reconcile_all()
        files = sum(1 for e in guard.manifest().values() if e.kind == "file")
        # rollbacks waiting for their writer's name are reported within a fraction of a second
        deadline = time.monotonic() + 1.0
        while (guard._unattributed or guard._deferred) and time.monotonic() < deadline and guard._thread:
            time.sleep(0.05)
        return (
            f"web tamper protection: {files} files checked, {self.counters['tampers'] - before} rolled back"
        )

    def health(self) -> list[DetectorHealth]:
        guard = self.guard
        if guard is None and not self._error:
            return []
        counters = dict(self.counters)
        if guard is not None:
            st = guard.status()
            lat = sorted(guard.latencies_ms)
            if lat:
                counters["restore_p95_ms"] = int(lat[min(len(lat) - 1, int(len(lat) * 0.95))])
            counters["files"] = sum(1 for e in guard.manifest().values() if e.kind == "file")
            status = "running" if st.state in ("protected", "unprotected_window") else "degraded"
            reason = st.message
        else:
            status, reason = "degraded", self._error
        if self.remote_message.startswith("remote backup failed"):
            reason = "; ".join(r for r in (reason, self.remote_message) if r)
            status = "degraded"
        return [DetectorHealth(name="wtp", status=status, reason=reason[:1024], counters=counters)]
