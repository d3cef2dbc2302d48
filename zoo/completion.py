"""Shell completion for ``zoo`` through argcomplete (``pip install 'zoo[completion]'``, then
``eval "$(register-python-argcomplete zoo)"`` in ``~/.bashrc``): commands, flags, preset and type
names (``--model``, ``--trainer``, ``--sampler``, ``zoo show``), and run folders (``--out``,
``--resume``, ``--init-from`` and the MODEL of generate, chat, eval and export).

It runs when the shell sets ``_ARGCOMPLETE``, on the parser the command line builds, and imports no
torch: the names come from the registry (hook modules import no torch), the folders from the disk.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from zoo.config import load_config
from zoo.specs import KINDS, Kind

# What marks a folder zoo opens: a run, a saved model (artifact), a Hugging Face folder, an adapter
MARKERS = ("run.json", "spec.json", "config.json", "adapter_config.json")
Completer = Callable[..., Iterable[str]]


def requested() -> bool:
    return "_ARGCOMPLETE" in os.environ


def words() -> list[str]:
    """The words typed before the cursor, after ``zoo`` (what `build_parser` needs to know the
    command: the shell starts ``zoo`` with no arguments while completing)."""
    line = os.environ.get("COMP_LINE", "")[: int(os.environ.get("COMP_POINT", "0") or 0)]
    try:
        typed = shlex.split(line)
    except ValueError:  # an open quote: the words before it
        typed = line.split()
    return typed[1:]


def names(*kinds: Kind, extra: tuple[str, ...] = ()) -> Completer:
    """Preset and type names of ``kinds`` in the registry (files and ``--registry`` included)."""

    def complete(prefix: str, parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
        cfg = load_config(getattr(parsed_args, "registry", None))
        found = {n for kind in kinds for n in cfg.names(kind)} | set(extra)
        return sorted(n for n in found if n.startswith(prefix))

    return complete


def folders(prefix: str, **_: Any) -> list[str]:
    """Run, artifact and model folders under what is typed (``runs/de`` -> ``runs/demo``), and other
    folders with a ``/`` to go into."""
    base, _sep, start = prefix.rpartition("/")
    where = Path(base + "/" if _sep else ".")
    try:
        entries = sorted(p for p in where.iterdir() if p.name.startswith(start) and p.is_dir())
    except OSError:
        return []
    shown = []
    for entry in entries:
        if entry.name.startswith(".") and not start.startswith("."):
            continue
        text = f"{base}/{entry.name}" if _sep else entry.name
        marked = any((entry / m).is_file() for m in MARKERS)
        shown.append(text if marked else text + "/")
    return shown


def models_or_folders(prefix: str, parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
    return [*names("models")(prefix, parsed_args), *folders(prefix)]


def resume_points(prefix: str, **_: Any) -> list[str]:
    return [w for w in ("last", "best") if w.startswith(prefix)] + folders(prefix)


# argument dest -> what completes it, in every command that has it
COMPLETERS: dict[str, Completer] = {
    "model": models_or_folders,
    "path": models_or_folders,  # generate, chat, export
    "models": models_or_folders,  # eval
    "init_from": folders,
    "out": folders,
    "resume": resume_points,
    "trainer": names("trainers"),
    "sampler": names("samplers"),
    "name": names(*KINDS, extra=("runtime",)),  # zoo show
    "words": names(extra=KINDS),  # zoo list KIND
}


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell (argcomplete's protocol) and exit; attaches `COMPLETERS` first."""
    import argcomplete

    for action in parser._actions:  # argparse keeps subcommands here: there is no public walk
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for arg in sub._actions:
                    if arg.dest in COMPLETERS:
                        arg.completer = COMPLETERS[arg.dest]  # argcomplete reads this attribute
    argcomplete.autocomplete(parser)
