"""``zoo`` and ``python -m zoo`` (and ``torchrun -m zoo``): the command line.

Nothing is imported before the guard below is in place, so Ctrl-C at any moment, start-up
included, ends with "zoo: interrupted" and exit code 130, never a traceback.
"""

import sys


def run() -> None:
    try:
        from zoo.cli import main

        code = main()
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
