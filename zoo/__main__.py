# PYTHON_ARGCOMPLETE_OK  (argcomplete: `zoo` answers shell completion, see zoo/completion.py)
"""``zoo`` and ``python -m zoo`` (and ``torchrun -m zoo``): the command line.

``import zoo`` put the start-up guard in place before anything else (see `zoo.interrupts`), so
Ctrl-C or SIGTERM at any moment, start-up included, ends with one line and exit code 130 or 143,
never a traceback.
"""


def run() -> None:
    from zoo.interrupts import command_line, held

    def main() -> int:
        with held():
            from zoo.cli import main
        return main()

    command_line(main)


if __name__ == "__main__":
    run()
