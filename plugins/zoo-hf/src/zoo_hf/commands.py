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


def pull_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="hf:ORG/NAME[@REVISION] (or ORG/NAME): a model, adapter or zoo artifact repo")


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch (or find in the cache) and print what is stored where: revision, files, sizes, sha256."""
    from zoo_hf.hub import describe, resolve

    name = args.reference.removeprefix("hf:")
    folder = resolve(name)
    source = describe(folder) or {"reference": f"hf:{name}", "revision": "?", "files": {}}
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    print(f"{source['reference']}  ({_size(sum(sizes.values()))})")
    print(f"  stored in {folder}")
    for file, digest in source["files"].items():
        print(f"  {file:<32} {_size(sizes.get(file, 0)):>9}  sha256 {digest}")
    print(f"open it with: zoo generate hf:{name.partition('@')[0]}@{source['revision']} --prompt ...")
    return 0


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"
