"""Protection: enabling/disabling an edition on servers by binding quotas; status derivation."""
