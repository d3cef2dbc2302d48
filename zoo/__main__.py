# PYTHON_ARGCOMPLETE_OK  (argcomplete: `zoo` answers shell completion, see zoo/completion.py)
"""``zoo`` and ``python -m zoo`` (and ``torchrun -m zoo``): the command line.

Nothing is imported before the guard below is in place, so Ctrl-C at any moment, start-up
included, ends with "zoo: interrupted" and exit code 130, never a traceback.
"""

import os
import signal
import sys

import zoo


def run() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is zoo.remember_startup_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, Ctrl-C raises
        if zoo.STARTUP_INTERRUPTS:  # it came while the package was importing
            raise KeyboardInterrupt
        from zoo.interrupts import held

        with held():
            from zoo.cli import main
        code = main()
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        code = 130
    if code == 130:
        # An interrupt that arrived inside a C extension's own exec() (pybind11 during `import
        # torch`) is remembered by CPython as unhandled, and it would end the process with SIGINT
        # instead of this code. Leave directly once the output is flushed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
