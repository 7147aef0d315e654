"""Pure program domain: targeting and adherence decisions, no I/O."""
