"""The single source of ctreg's version (pyproject.toml reads it: ``dynamic = ["version"]``)."""

__version__ = "0.1.0"
