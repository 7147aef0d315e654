"""`python -m mtm.notify` runs the notify service."""

from mtm.notify.main import main

main()
