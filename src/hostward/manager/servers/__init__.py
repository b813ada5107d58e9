"""servers domain."""
