"""Collectors own the OS handles (files under the host root, /proc, psutil, package databases)."""

from hostward.agent.collectors.assets import CATEGORIES, AssetCollector, collect_accounts
from hostward.agent.collectors.hostfacts import collect_host_facts, read_machine_id

__all__ = ["CATEGORIES", "AssetCollector", "collect_accounts", "collect_host_facts", "read_machine_id"]
