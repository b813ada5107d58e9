"""Tiny stdlib-only leaves shared by manager, agent and CLI."""
