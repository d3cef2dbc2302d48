"""`zoo ...`: the command line. Bad input exits 2 with one message (a traceback only with --debug).

The listing commands (list, show, plugins, schema, check) never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from zoo.api import list_names
from zoo.build import parameter_estimate
from zoo.config import Config, config_from_args, load_config, plugin_settings, registry_files, spec_ref
from zoo.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PluginError, UnknownNameError, ZooError
from zoo.files import shorten
from zoo.hookspecs import CORE_COMMANDS
from zoo.interrupts import held
from zoo.launch import relaunch_with_torchrun
from zoo.lm.tokenizers import named_tokenizer, tokenizer_argument
from zoo.model_folders import reference_scheme
from zoo.registry import CommandEntry, Registry, conflict_message
from zoo.specs import KINDS, Kind, Spec, field_table
from zoo.version import __version__

EXIT_OK = 0
EXIT_CODES = """exit codes:
  0    success
  1    the run failed while running (a non-finite loss, a checkpoint that could not be written)
  2    bad input: usage, a spec, a registry file, a data file, a model folder or checkpoint
  130  interrupted (Ctrl-C), at any moment
"""


def _config(args: argparse.Namespace) -> Config:
    return config_from_args(args)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# --------------------------------------------------------------------------- listing


def cmd_list(args: argparse.Namespace) -> int:
    """``zoo list [KIND] [PATTERN] [--protocol P]``: types and presets, with where each came from."""
    import fnmatch

    cfg = _config(args)
    if args.cached:
        return list_cached(cfg, args.json)
    words = list(args.words or [])
    kinds: Sequence[Kind] = [words.pop(0)] if words and words[0] in KINDS else KINDS
    if len(words) > 1:
        raise ZooError(f"zoo list takes at most a kind and a pattern, got {' '.join(args.words)}")
    pattern = words[0] if words else "*"

    wanted = {kind: set(list_names(kind, pattern, protocol=args.protocol, config=cfg)) for kind in kinds}
    # presets exactly as a plugin shipped them (not overridden by a registry file) name their distribution
    shipped = {
        (p.kind, p.name): p.distribution for p in cfg.registry.presets if cfg.origins.get((p.kind, p.name)) == p.origin
    }
    data: dict[str, Any] = {}
    for kind in kinds:
        data[kind] = {
            "types": {
                name: {
                    "distribution": e.distribution,
                    "version": e.version,
                    "class": e.spec_cls.__name__,
                    "protocol": e.spec_cls.protocol,
                }
                for name, e in cfg.registry.types(kind).items()
                if name in wanted[kind]
            },
            "presets": {
                name: {
                    "type": spec.type,
                    "protocol": spec.protocol,
                    "origin": cfg.origins.get((kind, name), "?"),
                    "distribution": shipped.get((kind, name)),
                    "description": cfg.descriptions.get((kind, name), ""),
                }
                for name, spec in cfg.presets[kind].items()
                if name in wanted[kind]
            },
            "unavailable": {
                name: why
                for (k, name), why in cfg.unavailable.items()
                if k == kind and fnmatch.fnmatchcase(name, pattern)
            },
        }

    conflicts = [conflict_message(c) for c in cfg.registry.conflicts()]
    for message in conflicts:
        print(f"conflict: {message}", file=sys.stderr)
    if args.json:
        _print_json({**data, "conflicts": conflicts})
        return EXIT_OK
    filtered = bool(words) or args.protocol is not None
    for kind_name, block in data.items():
        if filtered and not any(block.values()):
            continue
        print(f"{kind_name}:")
        for name, info in block["types"].items():
            print(f"  {name:<24} type    {info['protocol']:<11} ({info['distribution']} {info['version']})")
        for name, info in block["presets"].items():
            print(f"  {name:<24} preset  {info['type']:<11} ({info['origin']})")
        for name, why in block["unavailable"].items():
            print(f"  {name:<24} unavailable: {shorten(why, 160)}")
        if not any(block.values()):
            print("  (none)")
    return EXIT_OK


def list_cached(cfg: Config, as_json: bool) -> int:
    """``zoo list --cached``: the models each hub plugin has on disk, ready to open offline."""
    rows = [row for hub in cfg.registry.hubs.values() if hub.cached is not None for row in hub.cached()]
    if as_json:
        _print_json(rows)
        return EXIT_OK
    if not cfg.registry.hubs:
        print("no hub plugin installed (hf: references need zoo-hf)", file=sys.stderr)
    for row in rows:
        refs = f" ({', '.join(row['refs'])})" if row.get("refs") else ""
        size = f"{row['size'] / 2**20:.1f} MB"
        print(f"  {row['reference']:<44} {str(row['revision'])[:12]}{refs:<10} {size:>10}  {row.get('kind', '')}")
    if not rows:
        print("  (no cached models; fetch one with: zoo pull hf:ORG/NAME)")
    return EXIT_OK


def _find(cfg: Config, name: str) -> tuple[Kind, Spec | None, Any]:
    """A preset or type name, in any kind: (kind, preset spec or None, entry); a hub reference
    shows the spec of the model it names."""
    if reference_scheme(name) is not None:
        spec = cfg.spec("models", name)
        return "models", spec, cfg.registry.entry("models", spec.type)
    for kind in KINDS:
        if name in cfg.presets[kind]:
            spec = cfg.presets[kind][name]
            return kind, spec, cfg.registry.entry(kind, spec.type)
        if name in cfg.registry.types(kind):
            return kind, None, cfg.registry.entry(kind, name)
    every = [n for kind in KINDS for n in cfg.names(kind)]
    raise UnknownNameError("name", name, every, hint=cfg.registry.not_loaded_hint())


def cmd_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    kind, preset, entry = _find(cfg, args.name)
    data: dict[str, Any] = {
        "name": args.name,
        "kind": kind,
        "type": entry.type,
        "distribution": entry.distribution,
        "version": entry.version,
        "fields": field_table(entry.spec_cls),
    }
    if preset is not None:
        data["values"] = preset.model_dump(mode="json")
        data["origin"] = cfg.origins.get((kind, args.name), "?")
        data["description"] = cfg.descriptions.get((kind, args.name), "")
    if args.params:
        if kind != "models":
            raise ZooError(f"--params applies to models; {args.name!r} is a {kind[:-1]}")

        spec = preset or cfg.spec("models", entry.type)
        data["params"] = parameter_estimate(spec)  # type: ignore[arg-type]
    if args.json:
        _print_json(data)
        return EXIT_OK
    if preset is not None:
        print(f"{args.name}: {kind[:-1]} preset of type {entry.type!r}, from {data['origin']}")
        print(f"  type {entry.type!r} from {entry.distribution} {entry.version}")
    else:
        print(f"{args.name}: {kind[:-1]} type from {entry.distribution} {entry.version}")
    doc = (data.get("description") or (entry.spec_cls.__doc__ or "")).strip().splitlines()
    if doc:
        print(f"  {doc[0]}")
    values = data.get("values", {})
    for f in data["fields"]:
        if f["name"] == "type":
            continue
        value = values.get(f["name"], f["default"]) if values else f["default"]
        shown = "(required)" if f["required"] and f["name"] not in values else json.dumps(value, default=str)
        bounds = f" [{', '.join(f['bounds'])}]" if f["bounds"] else ""
        print(f"  {f['name']:<18} {shown:<22} {f['type']}{bounds}  {f['description']}")
    if "params" in data:
        p = data["params"]
        print(
            f"  parameters: {p['parameters']:,} ({p['weights_fp32_mb']} MB fp32, {p['weights_bf16_mb']} MB bf16; "
            f"~{p['training_adamw_fp32_mb']} MB to train with AdamW in fp32, before activations)"
        )
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "status": p.status,
            "reason": p.reason,
            "entries": [f"{k[:-1]}:{t}" for k, t in p.entries] + p.extras,
        }
        for p in cfg.registry.plugins.values()
    ]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for r in rows:
        line = f"{r['distribution']:<20} {r['version']:<10} {r['status']:<9}"
        line += f" {', '.join(r['entries'])}" if r["status"] == "loaded" else f" {r['reason']}"
        print(line)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    _print_json(_config(args).schema())
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:

    cfg = load_config(args.file or args.registry, args.set or ())
    problems = [f"{k}.{n}: {why}" for (k, n), why in cfg.unavailable.items()]
    problems += [conflict_message(c) for c in cfg.registry.conflicts()]
    counts = {kind: len(cfg.presets[kind]) for kind in KINDS}
    layers = [str(f) for f in registry_files(args.file or args.registry)]
    if args.json:
        _print_json(
            {"ok": not problems, "problems": problems, "presets": counts, "files": layers, "source": cfg.source}
        )
    elif problems:
        print(f"{cfg.source or '(no registry file)'}: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
    else:
        merged = " < ".join(["plugin presets", *layers])
        print(f"{merged}: ok ({', '.join(f'{v} {k}' for k, v in counts.items())})")
    return EXIT_BAD_INPUT if problems else EXIT_OK


# --------------------------------------------------------------------------- running


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc and args.nproc > 1:
        return relaunch_with_torchrun(args.nproc, args.argv)
    if args.compile:
        args.set = [*(args.set or []), "runtime.compile=true"]
    cfg = config_from_args(args, ("device", "precision", "seed"))
    from zoo import distributed
    from zoo.trainers.training import train_from_config

    try:
        result = train_from_config(
            cfg,
            spec_ref(args.model) if args.model is not None else None,
            spec_ref(args.trainer),
            args.out,
            data=args.data,
            resume=args.resume,
            force=args.force,
            init_from=args.init_from,
            lora=args.lora,
            tokenizer=named_tokenizer(args.tokenizer, config=cfg) if args.tokenizer else None,
        )
    finally:
        distributed.shutdown()
    if distributed.rank() == 0:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
        print(f"done: {result.steps} steps; {shown}; model saved to {result.artifact}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """zoo's own commands, then every loaded plugin's (only the chosen one's arguments are added,
    so that a plugin's argument code runs only for its own command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", help="registry file (default: $ZOO_REGISTRY or ./registry.toml)")
    common.add_argument("--set", action="append", metavar="PATH=VALUE", help="override, e.g. runtime.seed=3")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="A plugin-based model zoo for PyTorch.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("list", cmd_list, "list registered types and named presets (zoo list [KIND] [PATTERN])")
    p.add_argument(
        "words", nargs="*", metavar="KIND|PATTERN", help=f"one of {', '.join(KINDS)}; a pattern, e.g. 'minigpt*'"
    )
    p.add_argument("--protocol", choices=["classifier", "causal-lm"], help="only entries of this model protocol")
    p.add_argument(
        "--cached", action="store_true", help="models already in a hub's cache (hf:...), with size and revision"
    )
    p.add_argument("--json", action="store_true")
    p = add("show", cmd_show, "show a type's or preset's fields, defaults and bounds")
    p.add_argument("name")
    p.add_argument("--params", action="store_true", help="parameter count and memory (builds on the meta device)")
    p.add_argument("--json", action="store_true")
    p = add("plugins", cmd_plugins, "list plugin distributions and their status")
    p.add_argument("--json", action="store_true")
    add("schema", cmd_schema, "print the JSON Schema of registry.toml")
    p = add("check", cmd_check, "validate a registry file, reporting every problem")
    p.add_argument("file", nargs="?")
    p.add_argument("--json", action="store_true")
    p = add("train", cmd_train, "train a model with a trainer")
    p.add_argument("--model", help="model preset, type, or inline JSON spec (default with --init-from: its spec)")
    p.add_argument(
        "--init-from",
        metavar="PATH",
        help="start from trained weights: a zoo artifact, a run folder, a LoRA adapter folder (merged onto its base), "
        "or a local model folder (e.g. Hugging Face)",
    )
    p.add_argument("--trainer", required=True, help="trainer preset, type, or inline JSON spec")
    p.add_argument(
        "--lora", action="store_true", help="train low-rank adapters only (settings: the trainer's lora table)"
    )
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, model)")
    p.add_argument("--data", help="data file or folder (default: the trainer's)")
    tokenizer_argument(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=False,
        metavar="last|best|PATH",
        help="continue the run in --out: from its latest checkpoint (the default), its best, or a checkpoint folder",
    )
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    p.add_argument("--device", help="runtime.device")
    p.add_argument("--precision", help="runtime.precision")
    p.add_argument("--seed", type=int, help="runtime.seed")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--nproc", type=int, default=0, help="launch N processes with torchrun (DDP)")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    # a core command parses without the plugins' commands (its own run loads the registry once)
    for entry in ({} if chosen in CORE_COMMANDS else plugin_commands(argv)).values():
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


# What commands that run models import, with Ctrl-C held (see zoo.interrupts); listing commands
# import none of it.
HEAVY = ("numpy", "torch", "safetensors", "zoo.trainers.training", "zoo.lm.generation")
LISTING = {"list", "show", "plugins", "schema", "check"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        parser = build_parser(argv)
    except ZooError as err:
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        if args.command not in LISTING:
            import importlib

            with held():
                for module in HEAVY:
                    importlib.import_module(module)
        code: int = args.func(args)
        return code
    except ZooError as err:
        if args.debug:
            raise
        print(f"zoo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`zoo list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
