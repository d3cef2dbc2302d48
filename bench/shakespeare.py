"""Learning quality: MiniGPT on tiny Shakespeare, byte-level.

The 4-layer / 4-head / 128-wide model, 64-token context, batch 12, 2000 steps (nanoGPT's CPU
recipe: AdamW lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, weight decay 0.1,
beta2 0.99, clip 1.0). Goal (issue 3): validation loss below 2.0. Prints the figure and wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, print_table, write_result

import zoo
from zoo.training import train_from_config

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 2000,
    "batch_size": 12,
    "context": 64,
    "lr": 1e-3,
    "optimizer": {"name": "adamw", "weight_decay": 0.1, "betas": [0.9, 0.99]},
    "schedule": {"name": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1},
    "grad_clip": 1.0,
    "eval_every": 250,
    "eval_batches": 50,
    "log_every": 50,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found (tiny Shakespeare lives in ../shared/data for benchmarks)")
    config = zoo.default_config()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_from_config(
            config, MODEL, {**TRAINER, "max_steps": args.steps}, Path(tmp) / "run", data=args.data
        )
    wall = time.perf_counter() - start
    row = {
        "steps": args.steps,
        "val_loss": result.metrics["val_loss"],
        "train_loss": result.metrics["train_loss"],
        "wall_s": wall,
        "goal": "val_loss < 2.0",
        "met": result.metrics["val_loss"] < 2.0,
    }
    print_table([row])
    write_result("shakespeare", [row], {"model": MODEL, "trainer": TRAINER})


if __name__ == "__main__":
    main()
