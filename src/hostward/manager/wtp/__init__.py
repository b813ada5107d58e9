"""Web tamper protection on the manager: per-server configuration, status, tamper events, remote backup."""
