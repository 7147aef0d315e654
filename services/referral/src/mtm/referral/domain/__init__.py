"""Pure referral domain: frozen values and decisions, no I/O."""
