"""Pure review domain: frozen values and decisions, no I/O."""
