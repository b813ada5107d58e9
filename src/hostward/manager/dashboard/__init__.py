"""Dashboard figures."""
