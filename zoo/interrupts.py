"""Ctrl-C (SIGINT) and SIGTERM, in one place: a stop loses nothing and never shows a traceback.

* Start-up: ``import zoo`` calls `guard_startup`, which only when zoo's command line starts
  (never in a program that imports zoo) remembers a signal that lands before the command line's
  own handlers exist; `command_line` raises it once they do.
* `held`: while C extensions import (numpy, torch), a signal is remembered and raised after the
  block, since an interrupt inside one can leave a half-made module that breaks the next use.
* The command line turns SIGINT and SIGTERM into `Interrupted` (a KeyboardInterrupt), so clean-up
  runs and the process ends with one line and exit code 128 + the signal (130, 143).
* Training: `stop_requests` turns a signal that would raise into a request the engine reads at
  the next step boundary, where it writes a checkpoint and raises `Stopped`; a second signal
  raises at once. Only a handler that would raise is taken over (Python's own for SIGINT, the
  command line's), and only in the main thread: a program's own handlers are left alone.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command line (or a second one reached a stopping run)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class Stopped(Interrupted):
    """Training stopped on a signal at a step boundary, with a checkpoint there (None before the
    first step: nothing was trained): ``zoo train ... --resume`` continues exactly. ``is_main``:
    raised on the process that reports it (rank 0)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, *, is_main: bool = True) -> None:
        super().__init__(signum)
        self.step, self.checkpoint, self.is_main = step, checkpoint, is_main


def exit_code(err: KeyboardInterrupt) -> int:
    """128 + the signal, as a shell reports a process the signal ended (130 SIGINT, 143 SIGTERM)."""
    return 128 + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)


def message(err: KeyboardInterrupt) -> str:
    return "zoo: terminated" if exit_code(err) == 128 + signal.SIGTERM else "zoo: interrupted"


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


# ----------------------------------------------------------------------------- start-up

STARTUP: list[int] = []  # signals that came while the package imported, before `command_line`


def _remember(signum: int, frame: FrameType | None) -> None:
    STARTUP.append(signum)


def is_the_command_line() -> bool:
    """True while ``python -m zoo`` (``torchrun -m zoo``) or the ``zoo`` script starts: never when
    a program of the user's imports zoo."""
    argv = list(getattr(sys, "orig_argv", None) or [])
    if "-m" in argv:
        return argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["zoo"]
    script = (getattr(sys, "argv", None) or [""])[0]
    return os.path.basename(script) in ("zoo", "zoo.exe")


def guard_startup() -> None:
    """Remember SIGINT/SIGTERM while zoo's command line starts (an ignored signal stays ignored)."""
    if not is_the_command_line():
        return
    for sig in SIGNALS:
        if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            signal.signal(sig, _remember)


def command_line(main: Callable[[], int]) -> NoReturn:
    """Run the command line's ``main`` with SIGINT and SIGTERM raising `Interrupted`, and exit."""
    try:
        for sig in SIGNALS:
            if signal.getsignal(sig) is _remember:
                signal.signal(sig, _raise)
        if STARTUP:  # it came while the package was importing
            raise Interrupted(STARTUP[0])
        code = main()
    except KeyboardInterrupt as err:
        print(message(err), file=sys.stderr)
        code = exit_code(err)
    # The interpreter's last collections would walk every object torch made only to find nothing
    # worth freeing (~0.9 s of CPU per process that imported torch): skip them.
    gc.freeze()
    if code > 128:
        # An interrupt that arrived inside a C extension's own exec() (pybind11 during `import
        # torch`) is remembered by CPython as unhandled, and it would end the process with SIGINT
        # instead of this code. Leave directly once the output is flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


# ----------------------------------------------------------------------------- imports


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Remember SIGINT/SIGTERM during the block (handlers that would raise only); raise the first
    as `Interrupted` once it ends."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig, handler in previous.items():
        if handler in (signal.default_int_handler, _raise):
            signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            raise Interrupted(pending[0])


def import_held(modules: Iterable[str]) -> None:
    """Import ``modules`` with interrupts held (what a command that runs models needs)."""
    import importlib

    with held():
        for module in modules:
            importlib.import_module(module)


# ----------------------------------------------------------------------------- training


class StopRequest:
    """The signal asking a run to stop at its next step boundary (None: none yet)."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While training runs: the first SIGINT/SIGTERM is a request, the second raises at once."""
    request = StopRequest()
    if not _main_thread():  # a library's training thread: the program's handlers stay as they are
        yield request
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if request.signum is not None:
            raise Interrupted(signum)
        request.signum = signum

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    taken = [sig for sig, handler in previous.items() if handler in (signal.default_int_handler, _raise)]
    for sig in taken:
        signal.signal(sig, on_signal)
    try:
        yield request
    finally:
        for sig in taken:
            signal.signal(sig, previous[sig])
