"""`zoo export MODEL --format NAME --out DIR`: the formats come from plugins (`zoo_register_exporters`);
zoo itself registers ``onnx`` (`zoo.onnx_export.export_onnx`), zoo-hf registers ``hf``."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.config import config_from_args, spec_ref
from zoo.errors import UnknownNameError
from zoo.rundir import check_out_path


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an artifact, a run folder, a local model folder (e.g. Hugging Face) or a preset")
    p.add_argument("--format", default="hf", help="an export format (zoo plugins lists them; default: hf)")
    p.add_argument("--out", required=True, help="the folder to write (never replaced)")


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.finetune import open_model
    from zoo.storage import atomic_dir

    cfg = config_from_args(args)
    entry = cfg.registry.exporters.get(args.format)
    if entry is None:
        raise UnknownNameError(
            "export format", args.format, cfg.registry.exporters, hint=cfg.registry.not_loaded_hint()
        )
    out = Path(args.out)
    check_out_path(out, [("the model", args.path)])
    model = open_model(spec_ref(args.path), cfg).eval()  # whatever `zoo generate` takes, resolved the same way
    with atomic_dir(out) as tmp:
        entry.export(model, tmp, {})
    print(f"wrote {out} ({args.format}, by {entry.distribution})")
    return 0
