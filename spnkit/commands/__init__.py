"""Subcommands of the ``spnkit`` command line."""
