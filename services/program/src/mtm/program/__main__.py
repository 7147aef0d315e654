"""`python -m mtm.program` runs the program service."""

from mtm.program.main import main

main()
