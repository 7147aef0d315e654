"""Pure notify domain: frozen values and decisions, no I/O."""
