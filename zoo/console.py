"""What a command shows beside zoo's own output.

``zoo --verbose`` (or ``ZOO_VERBOSE=1``) lets the libraries plugins wrap (transformers, ...) print
their own progress bars and log lines; without it a command shows zoo's output alone. The choice
travels in the environment, so processes a command starts (``--nproc``) inherit it. A program that
imports zoo and never runs the command line keeps its libraries as it set them.
"""

from __future__ import annotations

import os

VERBOSE = "ZOO_VERBOSE"


def verbose() -> bool:
    """Whether libraries may print their own progress bars and logs: True unless the command line
    runs without ``--verbose`` (``ZOO_VERBOSE=0``). A plugin checks it before quieting its library."""
    return os.environ.get(VERBOSE, "1") != "0"


def set_verbose(on: bool) -> None:
    """The command line's choice (``--verbose``), for this process and those it starts."""
    os.environ[VERBOSE] = "1" if on else "0"
