"""Enforcers: side effects (quarantine vault, process kills, firewall blocks), each with a ledger."""
