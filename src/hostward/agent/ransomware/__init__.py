"""Ransomware prevention: bait files, the encryption-behaviour rule, kill-and-isolate, snapshots."""

from hostward.agent.ransomware.bait import Bait, plant, rotate_if_due
from hostward.agent.ransomware.behaviour import RateRule
from hostward.agent.ransomware.monitor import BAIT_TOUCHED, ENCRYPTION_BEHAVIOUR, RansomwareMonitor
from hostward.agent.ransomware.policy import PolicyError, RansomwareError, RansomwarePolicy, validate
from hostward.agent.ransomware.snapshot import RestoreResult, SnapshotInfo, SnapshotStore

__all__ = [
    "BAIT_TOUCHED",
    "ENCRYPTION_BEHAVIOUR",
    "Bait",
    "PolicyError",
    "RansomwareError",
    "RansomwareMonitor",
    "RansomwarePolicy",
    "RateRule",
    "RestoreResult",
    "SnapshotInfo",
    "SnapshotStore",
    "plant",
    "rotate_if_due",
    "validate",
]
