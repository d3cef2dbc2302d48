"""What a run reports while it trains: loss windows, device-side step figures, gradient norms,
MFU, each rank's share, and the progress bar with its evaluation rows.

The step loop (`zoo.trainers.engine.train`) hands each step's loss and gradient norms to
`StepFigures`, which keeps them on the device until a log line, evaluation, checkpoint or callback
needs them: one host sync per interval.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.errors import TrainingError
from zoo.runtime import Runtime
from zoo.trainers.loggers import Loggers
from zoo.trainers.specs import EngineSpec


@dataclass
class LogWindow:
    """Training figures accumulated between two log lines."""

    flops_per_unit: float = 0.0  # for the MFU estimate (0: none)
    peak: float | None = None  # the device's peak FLOP/s at the run's precision (None: unknown)
    loss: float = 0.0
    steps: int = 0
    units: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, step_loss: float) -> None:
        self.loss += step_loss
        self.steps += 1

    def flush(self, runtime: Runtime, step: int, lr: float, grad_norm: float, unit: str) -> dict[str, Any]:
        """The log record for this window (the loss is the mean over all ranks: a collective)."""
        loss = float(runtime.dist.all_reduce_mean(torch.tensor(self.loss))) / max(self.steps, 1)
        rate = self.units / max(time.perf_counter() - self.start, 1e-9)
        record = {"step": step, "split": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm, f"{unit}_per_s": rate}
        if self.peak and self.flops_per_unit:
            record["mfu"] = rate * self.flops_per_unit / (self.peak * runtime.dist.world_size)
        self.loss, self.steps, self.units, self.start = 0.0, 0, 0, time.perf_counter()
        return record


class StepFigures:
    """Each step's loss and per-parameter gradient norms, kept on the device until the next point
    that needs them on the host (a log line, an evaluation, a checkpoint, a callback reading the
    loss): one host sync per interval instead of one per micro-step, which stalls a GPU. The check
    still names the first step whose loss or gradient was not finite."""

    MAX_PENDING = 1000

    def __init__(
        self, names: list[str], groups: list[str], window: LogWindow, last_good: Callable[[], str], scaled: bool
    ) -> None:
        self.names, self.groups, self.window, self.scaled = names, groups, window, scaled
        self.last_good = last_good  # what is left to resume from, for the error message
        self.steps: list[int] = []
        self.losses: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []  # (P,) per step, P = parameters with a gradient
        self.grad_norm = math.nan  # of the last checked step
        self.last_loss = math.nan

    def add(self, step: int, loss: torch.Tensor, norms: torch.Tensor) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.norms.append(norms)
        if len(self.steps) >= self.MAX_PENDING:  # a very long log interval: bounded device memory
            self.check()

    def check(self) -> None:
        """Read the pending figures (one sync) into the log window; a `TrainingError` at the first
        non-finite loss, or non-finite gradient (unless fp16 loss scaling skips those steps)."""
        if not self.steps:
            return
        norms = torch.stack(self.norms)
        norms = norms.full_tensor() if hasattr(norms, "full_tensor") else norms  # DTensor under FSDP
        losses, rows = torch.stack(self.losses).tolist(), norms.float().cpu()
        totals = torch.linalg.vector_norm(rows, dim=1).tolist()
        for step, loss, total, row in zip(self.steps, losses, totals, rows, strict=True):
            if not math.isfinite(loss):
                raise TrainingError(
                    f"non-finite loss ({loss}) at step {step}; "
                    + self.last_good()
                    + "; lower lr, enable grad_clip, or use bf16-mixed/fp32"
                )
            if not math.isfinite(total) and not self.scaled:
                bad = [f"{self.names[i]} (param group {self.groups[i]!r})" for i in (~row.isfinite()).nonzero()[:, 0]]
                where = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                raise TrainingError(f"non-finite gradient at step {step} in {where}; " + self.last_good())
            self.window.add(loss)
        self.last_loss, self.grad_norm = losses[-1], totals[-1]
        self.steps, self.losses, self.norms = [], [], []


def clip_gradients(params: Sequence[torch.Tensor], clip: float) -> torch.Tensor:
    """Scale the gradients to a total norm of at most ``clip``; returns each parameter's gradient
    norm (P,) as a device tensor (no host sync), as `torch.nn.utils.clip_grad_norm_` computes them."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = [n.float() for n in torch._foreach_norm(grads)]
    if len(grads) < len(params):  # a parameter the step did not reach: norm 0, to keep the order
        found = iter(norms)
        norms = [next(found) if p.grad is not None else torch.zeros((), device=p.device) for p in params]
    stacked = torch.stack(norms)
    if math.isfinite(clip):
        torch.nn.utils.clip_grads_with_norm_(params, clip, torch.linalg.vector_norm(stacked))
    return stacked


# Dense bf16/fp16 tensor-core peaks (FLOP/s) by device name, for the MFU estimate.
# Longer names first: "A100" before "A10", "L40S" before "L4".
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "4090": 165e12,
}


def peak_flops(runtime: Runtime) -> float | None:
    """The device's peak at the run's precision, where zoo knows it: CUDA with bf16/fp16 mixed precision."""
    if runtime.device.type != "cuda" or runtime.precision not in ("bf16-mixed", "fp16-mixed"):
        return None
    return peak_for(torch.cuda.get_device_name(runtime.device))


def peak_for(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_FLOPS.items() if key in device_name), None)


def flops_per_unit(model: nn.Module, unit: str) -> float:
    """Training FLOPs per token, 6 x parameters (forward 2N, backward 4N; attention left out):
    the usual estimate behind MFU. Other units (examples of any shape) get none."""
    return 6.0 * sum(p.numel() for p in model.parameters()) if unit == "tokens" else 0.0


class RankShares:
    """What this process trained on since it started: units and a sum of the input ids/values.

    Logged for every rank at the end of a run, so a multi-process run shows that each process
    trained on its own slice of every batch.
    """

    def __init__(self) -> None:
        self.units, self.checksum = 0, torch.zeros((), dtype=torch.float64)

    def add(self, units: int, inputs: torch.Tensor) -> None:
        self.units += units
        self.checksum += inputs.double().sum()  # on the CPU, before the batch moves; read once, at the end

    def gather(self, runtime: Runtime) -> dict[str, Any]:
        rows = runtime.dist.all_gather_floats([float(self.units), float(self.checksum)])
        return {"world_size": len(rows), "units": [int(r[0]) for r in rows], "input_sum": [r[1] for r in rows]}


def progress_bar(spec: EngineSpec, start: int, *, enabled: bool) -> Any:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe, a job scheduler) `ProgressLines`,
    one line per log interval, the same calls."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return ProgressLines(spec.max_steps, start)
    return tqdm(
        total=spec.max_steps, initial=start, disable=not enabled, dynamic_ncols=True, leave=False, mininterval=0.5
    )


class ProgressLines:
    """What the bar shows, as one flushed stdout line per log record (``set_postfix``):
    ``step 10/800 | loss 5.1234 | lr 3.00e-03 | gnorm 1.2 | tokens/s 13,512 | eta 1m52s``.
    Evaluation rows (``write``) go to stdout too, flushed, so a log reads in order."""

    def __init__(self, total: int, start: int) -> None:
        self.total, self.n, self.start = total, start, start
        self.began = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, shown: dict[str, str]) -> None:
        cells = [f"step {self.n}/{self.total}", *(f"{k} {v}" for k, v in shown.items())]
        done = self.n - self.start
        if done > 0 and self.n < self.total:
            cells.append(f"eta {duration((self.total - self.n) * (time.perf_counter() - self.began) / done)}")
        self.write(" | ".join(cells))

    def write(self, line: str) -> None:
        print(line, flush=True)

    def close(self) -> None:
        pass


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def log_train(record: dict[str, Any], log: Loggers, metrics: dict[str, float], bar: Any) -> None:
    log.log(record)
    metrics["train_loss"] = record["loss"]
    bar.set_postfix(postfix(record))


def postfix(record: dict[str, Any]) -> dict[str, str]:
    """What the progress bar shows: the figures of the last log record."""
    shown = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}", "gnorm": f"{record['grad_norm']:.3g}"}
    for key, value in record.items():
        if key.endswith("_per_s"):  # tokens_per_s -> tokens/s
            shown[f"{key[: -len('_per_s')]}/s"] = f"{value:,.0f}"
    if "mfu" in record:
        shown["mfu"] = f"{record['mfu']:.1%}"
    return shown


def table_row(step: int, metrics: dict[str, float]) -> str:
    cells = [f"step {step:>6}"] + [f"{k} {v:.4f}" for k, v in metrics.items()]
    return " | ".join(cells)
