"""Baseline checks: unsafe configuration per check and server, weak passwords, password complexity."""
