"""``hostward agent status``: what this state directory says about enrollment, outbox and heartbeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hostward.agent.lockfile import is_running
from hostward.agent.state import StateStore, open_db
from hostward.agent.state.store import DB_NAME
from hostward.agent.transport.outbox import DB_NAME as OUTBOX_DB
from hostward.agent.transport.outbox import read_stats


def agent_status(state_dir: Path) -> dict[str, Any]:
    """A JSON-ready summary; never modifies the state (read-only connections)."""
    report: dict[str, Any] = {
        "state_dir": str(state_dir),
        "enrolled": False,
        "running": is_running(state_dir),
        "server_id": None,
        "name": None,
        "manager_url": None,
        "region": None,
        "enrolled_at": None,
        "policy_version": None,
        "protection": None,
        "outbox": {"depth": 0, "alarms": 0, "counters": {}},
        "last_heartbeat": None,
        "health": None,
    }
    if (state_dir / DB_NAME).exists():
        state = StateStore.open(state_dir, readonly=True)
        try:
            creds = state.credentials()
            if creds is not None:
                report.update(
                    enrolled=True,
                    server_id=creds.server_id,
                    name=creds.name,
                    manager_url=creds.manager_url,
                    region=creds.region,
                    enrolled_at=creds.enrolled_at.isoformat(),
                )
            bundle = state.policy_bundle()
            if bundle is not None:
                report.update(policy_version=bundle.version, protection=bundle.protection)
            beat = state.last_heartbeat()
            if beat is not None:
                report["last_heartbeat"] = beat.model_dump(mode="json")
            health = state.last_health()
            if health is not None:
                report["health"] = health.model_dump(mode="json")
        finally:
            state.close()
    if (state_dir / OUTBOX_DB).exists():
        conn = open_db(state_dir / OUTBOX_DB, [], readonly=True)
        try:
            stats = read_stats(conn)
        finally:
            conn.close()
        report["outbox"] = {"depth": stats.depth, "alarms": stats.alarms, "counters": stats.counters}
    return report


def format_status(report: dict[str, Any]) -> str:
    """Human-readable lines."""
    if not report["enrolled"]:
        return f"state dir:   {report['state_dir']}\nenrolled:    no"
    beat = report.get("last_heartbeat") or {}
    if beat:
        result = "ok" if beat.get("ok") else f"failed: {beat.get('error', '')}"
        heartbeat = f"{beat.get('at')} {result}"
        if not beat.get("ok") and beat.get("last_ok_at"):
            heartbeat += f" (last ok {beat['last_ok_at']})"
    else:
        heartbeat = "never"
    outbox = report["outbox"]
    counters = outbox.get("counters", {})
    policy = "-" if report["policy_version"] is None else str(report["policy_version"])
    if report["protection"] is not None:
        policy += f" (protection {'on' if report['protection'] else 'off'})"
    lines = [
        f"state dir:   {report['state_dir']}",
        "enrolled:    yes",
        f"running:     {'yes' if report['running'] else 'no'}",
        f"server id:   {report['server_id']}",
        f"name:        {report['name'] or '-'}",
        f"manager:     {report['manager_url']}",
        f"region:      {report['region'] or '-'}",
        f"policy:      {report['policy_version'] if report['policy_version'] is not None else '-'}"
        + (
            "" if report["protection"] is None else f" (protection {'on' if report['protection'] else 'off'})"
        ),
        f"outbox:      {outbox['depth']} pending ({outbox['alarms']} alarms); "
        f"dropped {counters.get('dropped', 0)}, rejected {counters.get('rejected', 0)}",
        f"heartbeat:   {heartbeat}",
    ]
    health = report.get("health")
    if health:
        lines.append(
            f"resources:   CPU {health['cpu_percent']:.1f}%, RSS {health['rss_bytes'] // 2**20} MB"
            + (f", DEGRADED: {health['degraded_reason']}" if health["degraded"] else "")
        )
        for det in health["detectors"]:
            reason = f" ({det['reason']})" if det["reason"] else ""
            lines.append(f"detector:    {det['name']}: {det['status']}{reason}")
    return "\n".join(lines)
