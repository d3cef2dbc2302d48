"""zoo's version, on the ground floor: artifacts and the command line record it."""

__version__ = "0.2.0"
