"""Learning quality: MiniGPT on tiny Shakespeare, byte-level.

The 4-layer / 4-head / 128-wide model, 64-token context, batch 12, 2000 steps. The `baseline`
recipe is nanoGPT's CPU recipe (AdamW lr 1e-3 with 100 warmup steps and cosine decay to 1e-4,
weight decay 0.1, beta2 0.99, clip 1.0); the other recipes change one ingredient at a time (an
ablation), all in one sitting, at the same steps, batch, context and parameter count (within 5%).
Goals: issue 3, validation loss below 2.0; issue 17, a recipe at <= 1.60 in <= 1.1x the baseline's
wall time. Prints one table (val loss, wall time, its ratio to the baseline's, parameters).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, print_table, write_result

import zoo
from zoo.trainers.training import train_from_config

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
    "checkpoint_every": 0,  # the default: one checkpoint, at the end
}


MUON = {"name": "muon", "weight_decay": 0.1, "betas": [0.9, 0.99], "muon_lr": 0.02}
MODERN = {"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm", "qk_norm": True, "tie_weights": False}
# The shipped recipe: the presets minigpt-rope-small + lm-muon, at this benchmark's shape and budget.
SHIPPED = "presets minigpt-rope-small + lm-muon"
# name -> (model changes, trainer changes); each row adds or removes one ingredient
RECIPES: dict[str, tuple[dict, dict]] = {
    "baseline": ({}, {}),
    "lr 3e-3": ({}, {"lr": 3e-3}),
    "+ muon": ({}, {"lr": 3e-3, "optimizer": MUON}),
    "+ muon, no biases": ({"bias": False}, {"lr": 3e-3, "optimizer": MUON}),
    "+ muon, rope": ({"positions": "rope"}, {"lr": 3e-3, "optimizer": MUON}),
    "+ muon, no biases, rope": ({"bias": False, "positions": "rope"}, {"lr": 3e-3, "optimizer": MUON}),
    "modern, adamw": ({"bias": False, **MODERN, "zero_init": True}, {"lr": 3e-3}),
    "modern + muon": ({"bias": False, **MODERN, "zero_init": True}, {"lr": 3e-3, "optimizer": MUON}),
    SHIPPED: ({}, {}),  # resolved from the presets in `shipped`
}
SHAPE = ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len")
BUDGET = (
    "max_steps",
    "batch_size",
    "context",
    "schedule",
    "grad_clip",
    "eval_every",
    "eval_batches",
    "log_every",
    "checkpoint_every",  # the same checkpoint writes on both sides
)


def shipped() -> tuple[dict, dict]:
    """The presets, with this benchmark's shape and budget (steps, batch, context, schedule)."""
    model = {**zoo.model_spec("minigpt-rope-small").model_dump(), **{k: MODEL[k] for k in SHAPE}}
    trainer = zoo.default_config().spec("trainers", "lm-muon").model_dump()
    return model, {**trainer, **{k: TRAINER[k] for k in BUDGET}}


def recipe(name: str) -> tuple[dict, dict]:
    if name == SHIPPED:
        return shipped()
    model_changes, trainer_changes = RECIPES[name]
    return {**MODEL, **model_changes}, {**TRAINER, **trainer_changes}


def step_times(names: list[str], rounds: int = 7, steps: int = 20) -> dict[str, float]:
    """Median ms per training step (forward, backward, clip, optimizer) of each recipe, in
    interleaved rounds (a, b, c, a, b, c, ...) on the same batch shape: the wall-time ratio
    without the noise of runs minutes apart on a shared machine."""
    import statistics

    import torch

    from zoo.trainers.optim import build_optimizer
    from zoo.trainers.specs import OptimizerSpec

    x = torch.randint(0, 256, (TRAINER["batch_size"], TRAINER["context"]))
    steppers = {}
    for name in names:
        model_spec, trainer_spec = recipe(name)
        model = zoo.build_model(model_spec)
        opt = build_optimizer(
            OptimizerSpec(**trainer_spec["optimizer"]), model, trainer_spec["lr"], torch.device("cpu")
        )

        def step(model: Any = model, opt: Any = opt) -> None:
            logits, _ = model(x)
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        steppers[name] = step
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for name, step in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps * 1000)
    return {n: statistics.median(t) for n, t in times.items()}


def run(name: str, data: str, steps: int) -> dict:
    model, trainer = recipe(name)
    model_changes, trainer_changes = RECIPES[name] if name != SHIPPED else (model, trainer)
    trainer = {**trainer, "max_steps": steps}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_from_config(zoo.default_config(), model, trainer, Path(tmp) / "run", data=data)
    params = zoo.parameter_estimate(zoo.model_spec(model))["parameters"]
    return {
        "recipe": name,
        "val_loss": result.metrics["val_loss"],
        "wall_s": time.perf_counter() - start,
        "params": params,
        "model": model_changes,
        "trainer": trainer_changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--recipes", default="baseline", help=f"comma-separated, or 'all': {', '.join(RECIPES)}")
    parser.add_argument("--out", default="shakespeare", help="results file name in bench/results")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found (tiny Shakespeare lives in ../shared/data for benchmarks)")
    names = list(RECIPES) if args.recipes == "all" else [n.strip() for n in args.recipes.split(",")]
    rows = [run(name, args.data, args.steps) for name in names]
    ms = step_times(names)
    base = next((r for r in rows if r["recipe"] == "baseline"), None)
    table = []
    for r in rows:
        ratio = r["wall_s"] / base["wall_s"] if base else None
        step_ratio = ms[r["recipe"]] / ms["baseline"] if base else None
        param_ratio = r["params"] / base["params"] if base else None
        met = (
            r["val_loss"] <= 1.60
            and ratio is not None
            and step_ratio is not None
            and max(ratio, step_ratio) <= 1.1
            and abs(param_ratio - 1) <= 0.05
        )
        table.append(
            {
                "recipe": r["recipe"],
                "val_loss": r["val_loss"],
                "wall_s": r["wall_s"],
                "x_baseline_wall": ratio,
                "ms_per_step": ms[r["recipe"]],
                "x_baseline_step": step_ratio,
                "params": r["params"],
                "goal_17_met": met,
            }
        )
    print_table(table)
    write_result(args.out, table, {"model": MODEL, "trainer": TRAINER, "recipes": {r["recipe"]: r for r in rows}})


if __name__ == "__main__":
    main()
