"""Deprecated: moved to :mod:`idselect.tools.evaluate` (issue 18). Importing this name warns and gives that module."""
from ._moved import alias

alias(__name__, "idselect.tools.evaluate")
