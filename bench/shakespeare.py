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
import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, fmt_range, paired_ratio, print_table, spread, write_result

import zoo
from zoo.training import train_from_config

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 2000,
    "batch_size": 12,
    "context": 64,
    "lr": 1e-3,
    "optimizer": {"type": "adamw", "weight_decay": 0.1, "betas": [0.9, 0.99]},
    "schedule": {"type": "cosine", "warmup_steps": 100, "min_lr_ratio": 0.1},
    "grad_clip": 1.0,
    "eval_every": 250,
    "eval_batches": 50,
    "log_every": 50,
    "checkpoint_every": 0,  # the default: one checkpoint, at the end
}


MUON = {"type": "muon", "weight_decay": 0.1, "betas": [0.9, 0.99], "muon_lr": 0.02}
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
# the shipped recipe with one of its ingredients taken back: name -> (model changes, trainer changes)
ONE_QKV = "shipped, q|k|v as one matrix"  # Muon orthogonalises the fused projection whole
TORCH_MUON = "shipped + torch muon"
WITHOUT: dict[str, tuple[dict, dict]] = {
    ONE_QKV: ({}, {}),
    "shipped, gelu": ({"activation": "gelu"}, {}),
    "shipped, learned positions": ({"positions": "learned"}, {}),
    "shipped, 5 newton-schulz steps": ({}, {"optimizer": {"ns_steps": 5}}),
    "shipped, cosine to 0.1": ({}, {"schedule": {"min_lr_ratio": 0.1}}),
    "shipped, clip 1.0": ({}, {"grad_clip": 1.0}),
    # torch.optim.Muon (torch >= 2.9) on the same hidden matrices, q|k|v whole, one matrix at a time
    TORCH_MUON: ({}, {"optimizer": {"type": "torch-muon"}}),
}
SHAPE = ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len")
BUDGET = (  # the shipped recipe keeps its own optimizer, lr, schedule and clipping
    "max_steps",
    "batch_size",
    "context",
    "eval_every",
    "eval_batches",
    "log_every",
    "checkpoint_every",  # the same checkpoint writes on both sides
)


def shipped() -> tuple[dict, dict]:
    """The presets, with this benchmark's shape and budget (steps, batch, context, evaluation)."""
    model = {**zoo.model_spec("minigpt-rope-small").model_dump(), **{k: MODEL[k] for k in SHAPE}}
    trainer = zoo.default_config().spec("trainers", "lm-muon").model_dump()
    return model, {**trainer, **{k: TRAINER[k] for k in BUDGET}}


def recipe(name: str) -> tuple[dict, dict]:
    if name == SHIPPED:
        return shipped()
    if name in WITHOUT:
        (model, trainer), (model_changes, trainer_changes) = shipped(), WITHOUT[name]
        merged = {k: {**trainer[k], **v} if isinstance(v, dict) else v for k, v in trainer_changes.items()}
        return {**model, **model_changes}, {**trainer, **merged}
    model_changes, trainer_changes = RECIPES[name]
    return {**MODEL, **model_changes}, {**TRAINER, **trainer_changes}


def step_times(names: list[str], rounds: int = 7, steps: int = 20) -> dict[str, float]:
    """Median ms per training step (forward, backward, clip, optimizer) of each recipe, in
    interleaved rounds (a, b, c, a, b, c, ...) on the same batch shape: the wall-time ratio
    without the noise of runs minutes apart on a shared machine."""
    import statistics

    import torch

    from zoo.trainers.engine import build_optimizer
    from zoo.trainers.telemetry import clip_gradients

    x = torch.randint(0, 256, (TRAINER["batch_size"], TRAINER["context"]))
    steppers = {}
    for name in names:
        model_spec, trainer_spec = recipe(name)
        model = zoo.build_model(model_spec)
        with fused_as(name):
            optimizer = zoo.default_config().spec("optimizers", trainer_spec["optimizer"])
            opt = build_optimizer(optimizer, model, trainer_spec["lr"], torch.device("cpu"))  # type: ignore[arg-type]

        def step(model: Any = model, opt: Any = opt, clip: float = trainer_spec["grad_clip"] or math.inf) -> None:
            logits, _ = model(x)
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
            clip_gradients([p for p in model.parameters() if p.grad is not None], clip)  # as the engine does
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


@contextlib.contextmanager
def fused_as(name: str) -> Iterator[None]:
    """For the ONE_QKV row, Muon sees no fused projections (MiniGPT's q|k|v is one tall matrix)."""
    from zoo.trainers import muon

    declared = muon.fused_row_blocks
    if name == ONE_QKV:
        muon.fused_row_blocks = lambda model: {}
    try:
        yield
    finally:
        muon.fused_row_blocks = declared


def run(name: str, data: str, steps: int) -> dict:
    model, trainer = recipe(name)
    model_changes, trainer_changes = RECIPES.get(name) or WITHOUT.get(name) or (model, trainer)
    trainer = {**trainer, "max_steps": steps}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, fused_as(name):
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


def sittings(names: list[str], data: str, steps: int, rounds: int) -> dict[str, list[dict]]:
    """Every recipe trained ``rounds`` times, the order reversed every other round (a b, b a, a b,
    ...) after a short unmeasured run of each, so no recipe always goes first on a machine whose
    speed drifts over minutes; the wall-time ratio is then the median of the round-by-round ratios."""
    for name in names:
        run(name, data, min(steps, 200))  # imports, thread pools, the text in the page cache (past any warmup)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            runs[name].append(run(name, data, steps))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--recipes", default="baseline", help=f"comma-separated, 'all' or 'without': {', '.join([*RECIPES, *WITHOUT])}"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="train every recipe this many times, in alternating order (a b, b a, ...)"
    )
    parser.add_argument("--out", default="shakespeare", help="results file name in bench/results")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        sys.exit(f"{args.data} not found (tiny Shakespeare lives in ../shared/data for benchmarks)")
    names = {"all": list(RECIPES), "without": ["baseline", SHIPPED, *WITHOUT]}.get(args.recipes)
    names = names or [n.strip() for n in args.recipes.split(",")]
    runs = sittings(names, args.data, args.steps, args.rounds)
    ms = step_times(names)
    base = runs.get("baseline")
    table = []
    for name, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        ratio = paired_ratio(walls, [b["wall_s"] for b in base], higher_is_better=True) if base else None
        step_ratio = ms[name] / ms["baseline"] if base else None
        param_ratio = rs[0]["params"] / base[0]["params"] if base else None
        val_loss = max(r["val_loss"] for r in rs)  # the same in every round: training is deterministic
        met = (
            val_loss <= 1.60
            and ratio is not None
            and step_ratio is not None
            and max(ratio["median"], step_ratio) <= 1.1
            and param_ratio is not None
            and abs(param_ratio - 1) <= 0.05
        )
        table.append(
            {
                "recipe": name,
                "val_loss": val_loss,
                "wall_s": spread(walls)["median"],
                "x_baseline_wall": ratio["median"] if ratio else None,
                "wall_ratio_range": fmt_range(ratio) if ratio else None,
                "ms_per_step": ms[name],
                "x_baseline_step": step_ratio,
                "params": rs[0]["params"],
                "goal_17_met": met,
            }
        )
    print_table(table)
    recipes = {name: {**rs[0], "wall_s": [r["wall_s"] for r in rs]} for name, rs in runs.items()}
    write_result(args.out, table, {"model": MODEL, "trainer": TRAINER, "rounds": args.rounds, "recipes": recipes})


if __name__ == "__main__":
    main()
