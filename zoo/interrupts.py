"""Ctrl-C that never leaves a half-imported module behind.

A SIGINT that lands while a C extension initialises (numpy, torch) can be turned into a failed
import that a library swallows, leaving the module half-made and the next use a traceback. While
`held` is active a SIGINT is only remembered; it is raised as KeyboardInterrupt once the block
ends. The command line holds interrupts while it imports what a command needs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt
