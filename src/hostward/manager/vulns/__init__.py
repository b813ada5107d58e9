"""Vulnerability management: imported feeds, findings per server, whitelist, scheduled scans."""
