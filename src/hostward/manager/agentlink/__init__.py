"""agentlink domain."""
