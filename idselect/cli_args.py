"""Deprecated: moved to :mod:`idselect.tools.cli_args` (issue 18). Importing this name warns and gives that module."""
from ._moved import alias

alias(__name__, "idselect.tools.cli_args")
