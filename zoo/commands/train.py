"""`zoo train`: a model with a trainer, into a run folder (`--nproc N` relaunches under torchrun)."""

from __future__ import annotations

import argparse

from zoo.config import config_from_args, spec_ref
from zoo.launch import relaunch_with_torchrun
from zoo.lm.tokenizers import named_tokenizer, tokenizer_argument

EXIT_OK = 0


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


def train_arguments(p: argparse.ArgumentParser) -> None:
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
