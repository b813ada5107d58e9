"""Risk state shared by vulnerabilities and baseline checks: per-server scan state, the security score."""
