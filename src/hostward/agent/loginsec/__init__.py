"""Login security on the agent: log tailing, brute-force detection, firewall blocking, SSH IP whitelist."""

from hostward.agent.loginsec.component import LoginSecurity, desired_from_bundle

__all__ = ["LoginSecurity", "desired_from_bundle"]
