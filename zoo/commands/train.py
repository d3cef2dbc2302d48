"""`zoo train`: a model with a trainer, into a run folder (`--nproc N` relaunches under torchrun)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from zoo.config import Config, config_from_args, spec_ref
from zoo.errors import SpecError
from zoo.interrupts import Stopped, exit_code
from zoo.launch import relaunch_with_torchrun, relaunched, user_argv
from zoo.lm.tokenizers import named_tokenizer, tokenizer_argument
from zoo.specs import PRECISION_HELP, validate

EXIT_OK = 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.nproc and args.nproc > 1:
        return relaunch_with_torchrun(args.nproc, args.argv)
    try:
        return train_command(args)
    except Stopped as stop:  # SIGINT/SIGTERM: a checkpoint was written at a step boundary
        if stop.is_main and stop.checkpoint is None:
            print("zoo: stopped before the first step; nothing was trained", file=sys.stderr)
        elif stop.is_main:
            again = resume_command(user_argv(args.argv))
            print(f"zoo: stopped at step {stop.step} ({stop.checkpoint}); continue with: {again}", file=sys.stderr)
        return EXIT_OK if relaunched() else exit_code(stop)  # under --nproc the launching process says 130/143


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues this run: the same arguments with ``--resume`` (and no ``--force``)."""
    kept: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--resume":  # its optional value: last, best or a path (not an option)
            value = next(rest, None)
            if value is not None and value.startswith("-"):
                kept.append(value)
        elif arg != "--force" and not arg.startswith("--resume="):
            kept.append(arg)
    return shlex.join(["zoo", *kept, "--resume"])


def train_command(args: argparse.Namespace) -> int:
    if args.compile:
        args.set = [*(args.set or []), "runtime.compile=true"]
    cfg = config_from_args(args, ("device", "precision", "seed"))
    from zoo import distributed
    from zoo.training import train_from_config

    together = False  # every rank finished, or stopped at the same step
    try:
        result = train_from_config(
            cfg,
            spec_ref(args.model) if args.model is not None else None,
            trainer_with(cfg, spec_ref(args.trainer), {f: getattr(args, f) for f in TRAINER_FLAGS}),
            args.out,
            data=args.data,
            resume=args.resume,
            force=args.force,
            init_from=args.init_from,
            lora=args.lora,
            tokenizer=named_tokenizer(args.tokenizer, config=cfg) if args.tokenizer else None,
        )
        together = True
    except Stopped:
        together = True
        raise
    finally:
        distributed.shutdown(together=together)
    if distributed.rank() == 0:
        print(summary(result.steps, result.metrics, result.artifact))
    return EXIT_OK


def summary(steps: int, metrics: dict[str, float], artifact: Any) -> str:
    """``done: 60 steps; val_loss 1.2345; model saved to R/model``, leaving out what a run lacks."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    parts = [f"done: {steps} steps", shown, f"model saved to {artifact}" if artifact else ""]
    return "; ".join(p for p in parts if p)


# --max-steps, --lr, --batch-size: fields of the trainer's spec (EngineSpec), set on whatever --trainer names
TRAINER_FLAGS = ("max_steps", "lr", "batch_size")
FLAG_OF = {f: f"--{f.replace('_', '-')}" for f in TRAINER_FLAGS}


def trainer_with(cfg: Config, trainer: Any, fields: dict[str, Any]) -> Any:
    """``trainer`` (a preset, type or inline spec) with the flags' fields set, validated again;
    ``trainer`` itself when no flag was given."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return trainer
    spec = cfg.spec("trainers", trainer)
    missing = [k for k in given if k not in type(spec).model_fields]
    if missing:
        raise SpecError([(FLAG_OF[missing[0]], f"trainer type {spec.type!r} has no field {missing[0]}")])
    try:
        return validate(type(spec), {**spec.model_dump(), **given})
    except SpecError as err:  # name the flag, not the field
        raise SpecError([(FLAG_OF.get(path, path), msg) for path, msg in err.issues]) from None


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
    p.add_argument("--max-steps", type=int, metavar="N", help="the trainer's max_steps (a longer warmup is clipped)")
    p.add_argument("--lr", type=float, help="the trainer's peak learning rate")
    p.add_argument("--batch-size", type=int, metavar="N", help="the trainer's batch_size (examples per step)")
    p.add_argument("--device", help="runtime.device")
    p.add_argument("--precision", help=PRECISION_HELP)
    p.add_argument("--seed", type=int, help="runtime.seed")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--nproc", type=int, default=0, help="launch N processes with torchrun (DDP)")
