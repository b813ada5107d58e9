"""File integrity monitoring on the manager: change records, per-server counts, accept, the policy."""
