"""Login security: blocked IPs, login whitelist, SSH login IP whitelist, common login IPs and locations,
the "login_security" policy, agent record ingest and the abnormal-login rule (login_1002)."""
