"""`zoo export MODEL --format NAME --out DIR`: the formats come from plugins (`zoo_register_exporters`);
zoo itself registers ``onnx`` (`zoo.onnx_export`), zoo-hf registers ``hf``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a saved model: an artifact or a run folder")
    p.add_argument("--format", default="hf", help="an export format (zoo plugins lists them; default: hf)")
    p.add_argument("--out", required=True, help="the folder to write (never replaced)")


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.artifacts import atomic_dir, load
    from zoo.config import config_from_args
    from zoo.errors import UnknownNameError
    from zoo.finetune import artifact_folder
    from zoo.rundir import check_out_path

    cfg = config_from_args(args)
    entry = cfg.registry.exporters.get(args.format)
    if entry is None:
        raise UnknownNameError(
            "export format", args.format, cfg.registry.exporters, hint=cfg.registry.not_loaded_hint()
        )
    out = Path(args.out)
    check_out_path(out, [("the model", args.path)])
    model = load(artifact_folder(Path(args.path)) or args.path, config=cfg).eval()
    with atomic_dir(out) as tmp:
        entry.export(model, tmp, {})
    print(f"wrote {out} ({args.format}, by {entry.distribution})")
    return 0


def export_onnx(model: Any, folder: Path, options: Mapping[str, Any]) -> None:
    """The ``onnx`` format (see `zoo.onnx_export`)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs both)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ZooError("ONNX export needs onnx and onnxscript: pip install 'zoo[onnx]'") from None
    from zoo.onnx_export import export

    export(model, folder)
