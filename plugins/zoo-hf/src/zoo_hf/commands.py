"""`zoo import`, added to the command line by this plugin's hook (`zoo export --format hf` is an exporter)."""

from __future__ import annotations

import argparse
from pathlib import Path

import zoo


def import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a local transformers folder (config.json + *.safetensors)")
    p.add_argument("--as", dest="as_", help="the zoo model type to import as (default: the only one that can)")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing --out")


def cmd_import(args: argparse.Namespace) -> int:
    from zoo_hf.convert import import_hf

    cfg = zoo.config_from_args(args)
    folder = Path(args.path)
    zoo.check_out_path(Path(args.out), [("the source folder", args.path)])
    model = import_hf(folder, args.as_, cfg)
    tokenizer = (
        zoo.load_tokenizer(folder, {"type": "hf"}, config=cfg) if (folder / "tokenizer.json").is_file() else None
    )
    zoo.save(model, args.out, tokenizer=tokenizer, config=cfg, overwrite=args.force)
    print(f"wrote {args.out} (a {zoo.spec_of(model).type} artifact)")
    return 0
