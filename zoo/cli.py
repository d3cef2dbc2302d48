"""`zoo ...`: the command line. It parses and dispatches; each command lives in `zoo.commands`. Bad
input exits 2 with one message (a traceback only with --debug).

The listing commands (list, show, plugins, schema, check) never import torch.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence

from zoo import completion
from zoo.commands import listing, train
from zoo.config import plugin_settings
from zoo.console import VERBOSE, set_verbose
from zoo.errors import PluginError, ZooError
from zoo.hookspecs import CORE_COMMANDS
from zoo.interrupts import exit_code, import_held, is_the_command_line, message
from zoo.registry import CommandEntry, Registry
from zoo.version import __version__

EXIT_OK = 0
EXIT_CODES = """exit codes:
  0    success
  1    the run failed while running (a non-finite loss, a checkpoint that could not be written)
  2    bad input: usage, a spec, a registry file, a data file, a model folder or checkpoint
  130  interrupted (Ctrl-C), at any moment; a training run stops at the next step with a checkpoint
  143  terminated (SIGTERM), likewise
"""


# zoo's own commands, in the order `zoo --help` lists them; the others (generate, chat, eval,
# export, plot, and every plugin's) come through `zoo_register_commands`.
Run = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]
CORE: tuple[tuple[str, Run, Arguments, str], ...] = (
    ("list", listing.cmd_list, listing.list_arguments, "list registered types and presets (zoo list [KIND] [PATTERN])"),
    ("show", listing.cmd_show, listing.show_arguments, "show a type's or preset's fields, defaults and bounds"),
    ("plugins", listing.cmd_plugins, listing.plugins_arguments, "list plugin distributions and their status"),
    ("schema", listing.cmd_schema, listing.schema_arguments, "print the JSON Schema of registry.toml"),
    ("check", listing.cmd_check, listing.check_arguments, "validate a registry file, reporting every problem"),
    ("train", train.cmd_train, train.train_arguments, "train a model with a trainer"),
)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """zoo's own commands, then every loaded plugin's (only the chosen one's arguments are added,
    so that a plugin's argument code runs only for its own command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", help="registry file (default: $ZOO_REGISTRY or ./registry.toml)")
    common.add_argument("--set", action="append", metavar="PATH=VALUE", help="override, e.g. runtime.seed=3")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument(
        "--verbose", action="store_true", help="let libraries (transformers, ...) print their own progress and logs"
    )
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="A plugin-based model zoo for PyTorch.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Run, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    for name, run, arguments, help_ in CORE:
        arguments(add(name, run, help_))
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # a core command parses without the plugins' commands (its own run loads the registry once),
    # and `--version` loads no plugin at all
    version_only = chosen is None and "--version" in argv
    for entry in ({} if chosen in CORE_COMMANDS or version_only else plugin_commands(argv)).values():
        p = add(entry.name, entry.run, f"{entry.help} [{entry.distribution}]")
        if entry.name == chosen and entry.arguments is not None:
            try:
                entry.arguments(p)
            except Exception as err:  # a plugin's bug: one message naming it, not a traceback
                raise PluginError(
                    f"command {entry.name!r} of {entry.distribution} {entry.version}: adding its arguments failed "
                    f"({type(err).__name__}: {err})"
                ) from err
    return parser


def plugin_commands(argv: Sequence[str]) -> dict[str, CommandEntry]:
    """Commands of the plugins the configuration loads; a registry file that does not parse is
    reported by the command that reads it, so here it only falls back to the default plugin set."""
    registry_arg = None
    for i, arg in enumerate(argv):
        if arg == "--registry" and i + 1 < len(argv):
            registry_arg = argv[i + 1]
        elif arg.startswith("--registry="):
            registry_arg = arg.split("=", 1)[1]

    return Registry(plugin_settings(registry_arg)).commands


# What commands that run models import, with Ctrl-C held (see zoo.interrupts.held); listing
# commands import none of it. (torch.optim imports torch._dynamo at a run's first step: importing
# it here would make a run ~0.2 s faster, and a `zoo train` that stops at a bad spec 1 s slower.)
HEAVY = ("numpy", "torch", "safetensors", "zoo.training", "zoo.lm.generation")
LISTING = {"list", "show", "plugins", "schema", "check"}


def import_heavy(modules: Sequence[str]) -> None:
    """Import ``modules`` with Ctrl-C held; in zoo's own process, with the garbage collector paused,
    then freeze what they made. torch makes over a million long-lived objects that each collection
    would only rescan: pausing saves a third of its import time, and frozen objects are skipped by
    later collections, during training and at exit. A program that calls `main` keeps its
    collector as it was."""
    own = is_the_command_line()
    if own:
        gc.disable()
    try:
        import_held(modules)
    finally:
        if own:
            gc.enable()
            gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    completing = argv is None and completion.requested()  # the shell asks (argcomplete): answer, exit
    argv = list(argv) if argv is not None else completion.words() if completing else sys.argv[1:]
    try:
        parser = build_parser(argv)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    if completing:
        completion.complete(parser)
    args = parser.parse_args(argv)
    args.argv = argv
    set_verbose(args.verbose or os.environ.get(VERBOSE) == "1")
    try:
        launcher = (getattr(args, "nproc", 0) or 0) > 1  # `zoo train --nproc N` only starts torchrun: no torch
        if args.command not in LISTING and not launcher:
            import_heavy(HEAVY)
        code: int = args.func(args)
        return code
    except ZooError as err:
        if args.debug:
            raise
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        print(message(err), file=sys.stderr)
        return exit_code(err)
    except BrokenPipeError:  # the reader went away (`zoo list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
