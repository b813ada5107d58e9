"""scans domain."""
