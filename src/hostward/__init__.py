"""hostward: open-source host security service (manager + agent)."""

__version__ = "0.1.0"
