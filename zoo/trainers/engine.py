"""The training engine every trainer reuses.

A trainer supplies a `Task` (how to sample a batch, compute its loss, evaluate); the engine owns
the rest: optimizer and schedule, autocast and loss scaling through the runtime, gradient
accumulation and clipping, non-finite checks, evaluation, metrics, checkpoints and exact resume.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from zoo import checkpoints
from zoo.config import Config
from zoo.errors import ArtifactError, RunDirError, TrainingError
from zoo.files import LENIENT, parse_json, read_model
from zoo.protocols import Batch, Task
from zoo.registry import Registry
from zoo.rundir import RUN_FILE, run_directory
from zoo.runtime import Runtime
from zoo.trainers.optim import build_optimizer, lr_factor
from zoo.trainers.specs import EngineSpec


@dataclass
class FitResult:
    out: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifact: Path | None = None


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        if enabled and (path.is_symlink() or (path.exists() and not path.is_file())):
            raise ArtifactError(f"{path}: not a regular file; zoo appends metrics only to its own file")

    def truncate_after(self, step: int) -> None:
        """Keep the lines up to ``step``; unreadable lines (a half-written last one) go."""
        if not (self.enabled and self.path.is_file()):
            return
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        keep = [ln for ln in text.splitlines() if ln.strip() and _line_step(ln) <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


@dataclass
class LogWindow:
    """Training figures accumulated between two log lines."""

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
        seconds = time.perf_counter() - self.start
        record = {
            "step": step,
            "split": "train",
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            f"{unit}_per_s": self.units / max(seconds, 1e-9),
        }
        self.loss, self.steps, self.units, self.start = 0.0, 0, 0, time.perf_counter()
        return record


class RankShares:
    """What this process trained on since it started: units and a sum of the input ids/values.

    Logged for every rank at the end of a run, so a multi-process run shows that each process
    trained on its own slice of every batch.
    """

    def __init__(self) -> None:
        self.units, self.checksum = 0, 0.0

    def add(self, units: int, inputs: torch.Tensor) -> None:
        self.units += units
        self.checksum += float(inputs.double().sum())  # on the CPU, before the batch moves

    def gather(self, runtime: Runtime) -> dict[str, Any]:
        rows = runtime.dist.all_gather_floats([float(self.units), self.checksum])
        return {"world_size": len(rows), "units": [int(r[0]) for r in rows], "input_sum": [r[1] for r in rows]}


def _line_step(line: str) -> int:
    try:
        step = parse_json(line, "metrics line").get("step")
    except (ArtifactError, AttributeError):
        return sys.maxsize  # an unreadable (half-written) line goes
    return step if isinstance(step, int) and not isinstance(step, bool) else sys.maxsize


class RunInfo(BaseModel):
    """``run.json``: what a run was started with (a resume must match its model)."""

    model_config = LENIENT
    model: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    init_from: dict[str, str] | None = None  # the parent of a fine-tune: {"path", "sha256"}


def train(
    model: nn.Module,
    task: Task,
    spec: EngineSpec,
    runtime: Runtime,
    out: str | Path,
    *,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    save_artifact: Callable[[Path, nn.Module], Path] | None = None,
    on_checkpoint: Callable[[], None] | None = None,
) -> FitResult:
    """Run ``spec.max_steps`` optimizer steps of ``task`` on ``model``, writing under ``out``.

    ``out`` was prepared by the trainer with `run_directory`; with ``resume`` the latest complete
    checkpoint there (if any) is restored first. ``on_checkpoint`` runs after each checkpoint.
    """
    out = Path(out)
    main = runtime.is_main
    ckpt_root = out / "checkpoints"
    if main:
        checkpoints.clean_stale(out)
    info = json.loads(json.dumps(run_info or {}, default=str))
    _check_run_info(out / RUN_FILE, info, resume=resume, runtime=runtime)

    runtime.seed_everything()
    data_rng = torch.Generator().manual_seed(runtime.seed)
    model.train()
    wrapped = runtime.prepare(model)
    optimizer = build_optimizer(spec.optimizer, model, spec.lr, runtime.device)
    scaler = runtime.grad_scaler()
    state = checkpoints.TrainState(0, model, optimizer, scaler, data_rng, {})
    log = MetricsLog(out / "metrics.jsonl", main)
    last = checkpoints.latest(ckpt_root) if resume else None
    if last is not None:
        checkpoints.load_checkpoint(last, state, runtime.dist)
        log.truncate_after(state.step)
        if main:
            print(f"resuming from {last} (step {state.step})", file=sys.stderr)
    elif resume and main:
        print(f"no checkpoint in {ckpt_root}: starting from step 0", file=sys.stderr)

    world = runtime.dist.world_size
    micro = spec.batch_size // spec.grad_accum
    if micro % world:
        raise TrainingError(f"batch_size / grad_accum = {micro} must be divisible by the number of processes ({world})")
    params = [p for p in model.parameters() if p.requires_grad]
    clip = spec.grad_clip if spec.grad_clip is not None else math.inf
    bar = _progress(spec, state.step, enabled=main and spec.progress)
    window = LogWindow()
    shares = RankShares()
    metrics: dict[str, float] = {}
    step = state.step
    try:
        while step < spec.max_steps:
            factor = lr_factor(spec.schedule, step, spec.max_steps)
            lr = spec.lr * factor
            for group in optimizer.param_groups:
                group["lr"] = group.get("peak_lr", spec.lr) * factor
            step_loss = 0.0
            for i in range(spec.grad_accum):
                batch = _shard(task.sample(data_rng, micro), runtime.dist.rank, world)
                window.units += task.count(batch) * world
                shares.add(task.count(batch), batch[0])
                batch = runtime.to_device(batch)
                sync = contextlib.nullcontext() if i == spec.grad_accum - 1 else _no_sync(wrapped)
                with sync:
                    with runtime.autocast():
                        loss = task.loss(wrapped, batch)
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise TrainingError(
                            f"non-finite loss ({value}) at step {step + 1}; "
                            + _last_good(ckpt_root)
                            + "; lower lr, enable grad_clip, or use bf16-mixed/fp32"
                        )
                    scaler.scale(loss / spec.grad_accum).backward()
                step_loss += value / spec.grad_accum
            scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # DTensor under FSDP
            if not math.isfinite(grad_norm) and not scaler.is_enabled():
                raise TrainingError(
                    f"non-finite gradient at step {step + 1} in {_bad_grads(model, optimizer)}; "
                    + _last_good(ckpt_root)
                )
            scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state.step = step
            if scaler.is_enabled() and scaler.get_scale() < scale_before:
                log.write({"step": step, "split": "train", "event": "skipped", "loss_scale": scaler.get_scale()})
                if main:
                    bar.write(
                        f"step {step}: fp16 gradient overflow, step skipped (loss scale -> {scaler.get_scale():g})"
                    )
            window.add(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            if step % spec.log_every == 0 or step == spec.max_steps:
                record = window.flush(runtime, step, lr, grad_norm, task.unit)
                log.write(record)
                metrics["train_loss"] = record["loss"]
            if (spec.eval_every and step % spec.eval_every == 0) or step == spec.max_steps:
                model.eval()
                with runtime.inference():
                    val = task.evaluate(model, runtime, spec.eval_batches)
                model.train()
                metrics.update(val)
                log.write({"step": step, "split": "val", **val})
                if main:
                    bar.write(_table_row(step, metrics))
            if (spec.checkpoint_every and step % spec.checkpoint_every == 0) or step == spec.max_steps:
                try:  # every rank: gathering a sharded state is a collective; rank 0 writes
                    checkpoints.save_checkpoint(ckpt_root, state, spec.keep_checkpoints, runtime.dist)
                except ArtifactError as err:
                    raise TrainingError(
                        f"checkpoint at step {step} could not be written ({err}); " + _last_good(ckpt_root)
                    ) from None
                runtime.dist.barrier()
                if on_checkpoint is not None and main:
                    on_checkpoint()
    finally:
        bar.close()
    log.write({"step": step, "split": "ranks", **shares.gather(runtime)})
    artifact = None
    if save_artifact is not None:
        final = runtime.dist.gathered(model)
        if main and final is not None:
            artifact = save_artifact(out / "model", final)
    runtime.dist.barrier()
    return FitResult(out, step, metrics, artifact)


class EngineTrainer:
    """Base of trainers built on the engine: a subclass says how to make its `Task`.

    ``fit`` checks the data (before ``out`` is touched), opens the run directory, makes the task,
    runs the engine, and adds the task's ``summary`` figures to the result.
    """

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.config: Config | None = None  # what `fit` was given: its registry has the data sources

    def registry(self) -> Registry:
        """The registry whose data sources read ``data`` (the default configuration's, unless
        ``fit`` was given a configuration)."""
        from zoo.api import default_config

        return (self.config or default_config()).registry

    def check_data(self, model: nn.Module, data: str | Path | None) -> None:
        """Raise `DataError` for data that cannot work, cheaply, before the run folder is touched."""

    def make_task(
        self, model: nn.Module, runtime: Runtime, data: str | Path | None, workdir: Path, resume: bool
    ) -> Task:
        raise NotImplementedError

    def fit(
        self,
        model: nn.Module,
        runtime: Runtime,
        out: str | Path,
        *,
        data: str | Path | None = None,
        resume: bool = False,
        force: bool = False,
        run_info: dict[str, Any] | None = None,
        save_artifact: Callable[[Path, nn.Module], Path] | None = None,
        inputs: Iterable[tuple[str, str | Path | None]] = (),
        config: Config | None = None,
    ) -> FitResult:
        """Train ``model`` into the run folder ``out`` (see `zoo.protocols.Trainer`)."""
        out = Path(out)
        self.config = config
        data = data if data is not None else self.spec.data
        self.check_data(model, data)
        with run_directory(
            out, resume=resume, force=force, runtime=runtime, inputs=[("--data", data), *inputs]
        ) as rundir:
            task = self.make_task(model, runtime, data, out / "data", resume)
            result = train(
                model,
                task,
                self.spec,
                runtime,
                out,
                resume=resume,
                run_info=run_info,
                save_artifact=save_artifact,
                on_checkpoint=rundir.commit,
            )
        result.metrics.update(task.summary)
        return result


def _check_run_info(path: Path, info: dict[str, Any], *, resume: bool, runtime: Runtime) -> None:
    """A resumed run must train the same model spec it started with.

    Every rank reads ``run.json`` before the main process rewrites it (a barrier in between), so
    no rank ever reads a half-written file, and all ranks fail alike on a mismatch.
    """
    if resume and path.exists():
        before = read_model(path, RunInfo)
        if (before.model or None) != (info.get("model") or None):
            raise RunDirError(
                f"{path.parent} was started with a different model spec; resume it with the same "
                "--model, or start a new run with another --out"
            )
    runtime.dist.barrier()
    if runtime.is_main:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    if world == 1:
        return batch
    size = batch[0].shape[0] // world
    return tuple(t[rank * size : (rank + 1) * size] for t in batch)


def _no_sync(wrapped: nn.Module) -> contextlib.AbstractContextManager[Any]:
    no_sync = getattr(wrapped, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


def _bad_grads(model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    group_of = {id(p): g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    bad = [
        f"{name} (param group {group_of.get(id(p), '?')!r})"
        for name, p in model.named_parameters()
        if p.grad is not None and not torch.isfinite(p.grad).all()
    ]
    return ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "") if bad else "(unknown)"


def _last_good(root: Path) -> str:
    last = checkpoints.latest(root)
    return f"last good checkpoint kept: {last}" if last else "no checkpoint was written yet"


def _progress(spec: EngineSpec, start: int, *, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    # a bar only on a terminal: in logs, the evaluation rows it writes are the record
    shown = enabled and sys.stderr.isatty()
    return tqdm(
        total=spec.max_steps, initial=start, disable=not shown, dynamic_ncols=True, leave=False, mininterval=0.5
    )


def _table_row(step: int, metrics: dict[str, float]) -> str:
    cells = [f"step {step:>6}"] + [f"{k} {v:.4f}" for k, v in metrics.items()]
    return " | ".join(cells)
