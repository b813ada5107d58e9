"""Ransomware prevention on the manager: named policies, per-server binding, status and snapshots."""
