"""`python -m mtm.reconciliation` runs the reconciliation service."""

from mtm.reconciliation.main import main

main()
