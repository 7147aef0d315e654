"""The mtm command line."""
