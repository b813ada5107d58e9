"""alarms domain."""
