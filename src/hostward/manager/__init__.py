"""The hostward manager: REST API, console, agent channel, scheduler."""
