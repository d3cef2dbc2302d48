"""`zoo list`, `zoo show`, `zoo plugins`, `zoo schema`, `zoo check`: what the registry holds. None of
them imports torch."""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from typing import Any

from zoo.api import list_names
from zoo.build import parameter_estimate
from zoo.config import Config, config_from_args, load_config, registry_files
from zoo.errors import EXIT_BAD_INPUT, UnknownNameError, ZooError
from zoo.files import shorten
from zoo.model_folders import reference_scheme
from zoo.registry import conflict_message
from zoo.specs import KINDS, Kind, RuntimeSpec, Spec, field_table

EXIT_OK = 0


def _config(args: argparse.Namespace) -> Config:
    return config_from_args(args)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_list(args: argparse.Namespace) -> int:
    """``zoo list [KIND] [PATTERN] [--protocol P]``: types and presets, with where each came from."""
    cfg = _config(args)
    if args.cached:
        return list_cached(cfg, args.json)
    words = list(args.words or [])
    kinds: Sequence[Kind] = [words.pop(0)] if words and words[0] in KINDS else KINDS
    if len(words) > 1:
        raise ZooError(f"zoo list takes at most a kind and a pattern, got {' '.join(args.words)}")
    pattern = words[0] if words else "*"

    wanted = {kind: set(list_names(kind, pattern, protocol=args.protocol, config=cfg)) for kind in kinds}
    literal = not any(c in pattern for c in "*?[")
    if literal and words and not any(wanted.values()) and not any(n == pattern for _, n in cfg.unavailable):
        # a word that is neither a kind nor a name (a glob that matches nothing is an empty list)
        every = [*KINDS, *(n for kind in kinds for n in cfg.names(kind))]
        raise UnknownNameError("kind or name", pattern, every, hint=f"kinds: {', '.join(KINDS)}")
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
    for kind in KINDS:
        if (kind, name) in cfg.unavailable:
            raise ZooError(f"{kind[:-1]} {name!r} is unavailable: {cfg.unavailable[(kind, name)]}")
    every = [n for kind in KINDS for n in cfg.names(kind)]
    raise UnknownNameError("name", name, every, hint=cfg.registry.not_loaded_hint())


def cmd_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.name == "runtime":
        return show_runtime(cfg, args.json)
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


def list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "words", nargs="*", metavar="KIND|PATTERN", help=f"one of {', '.join(KINDS)}; a pattern, e.g. 'minigpt*'"
    )
    p.add_argument("--protocol", choices=["classifier", "causal-lm"], help="only entries of this model protocol")
    p.add_argument(
        "--cached", action="store_true", help="models already in a hub's cache (hf:...), with size and revision"
    )
    p.add_argument("--json", action="store_true")


def show_runtime(cfg: Config, as_json: bool) -> int:
    """``zoo show runtime``: the `[runtime]` table's fields, with the values the registry files set."""
    values = cfg.runtime.model_dump(mode="json")
    fields = field_table(RuntimeSpec)
    if as_json:
        _print_json({"name": "runtime", "fields": fields, "values": values})
        return EXIT_OK
    print("runtime: the [runtime] table (device, precision, seed; --device/--precision/--seed set it too)")
    for f in fields:
        print(f"  {f['name']:<18} {json.dumps(values[f['name']]):<22} {f['type']}  {f['description']}")
    return EXIT_OK


def show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a preset or type name, or 'runtime'")
    p.add_argument("--params", action="store_true", help="parameter count and memory (builds on the meta device)")
    p.add_argument("--json", action="store_true")


def plugins_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def schema_arguments(p: argparse.ArgumentParser) -> None:
    pass


def check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?")
    p.add_argument("--json", action="store_true")
