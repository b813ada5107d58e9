"""The web console: server-rendered pages mounted at ``/console`` (see ``views.mount_console``)."""
