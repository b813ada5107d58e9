"""Global switches stored in the database (auto-bind, isolate-and-kill, ...)."""
