"""The training engine every trainer reuses: a short step loop.

A trainer supplies a `Task` (how to sample a batch, compute its loss, evaluate); the engine owns
the rest: optimizer and schedule, autocast and loss scaling through the runtime, gradient
accumulation and clipping, evaluation and exact resume. What it reports lives in
`zoo.trainers.telemetry`, what callbacks see in `zoo.trainers.run` (which writes the
checkpoints), what ``run.json`` holds in `zoo.trainers.records`.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import checkpoints
from zoo.checkpointer import SET_ASIDE, Checkpointer, Resume
from zoo.config import Config, default_config
from zoo.errors import PluginError, SpecError, TrainingError, ZooError
from zoo.interrupts import Stopped, StopRequest, stop_requests
from zoo.protocols import Batch, Callback, FitResult, Logger, Schedule, Task
from zoo.quantization import refuse_quantized
from zoo.registry import Registry
from zoo.rundir import RUN_FILE, run_directory
from zoo.runtime import Runtime
from zoo.specs import Kind, OptimizerSpec, ScheduleSpec, Spec
from zoo.trainers.loggers import JsonlLogger, Loggers
from zoo.trainers.records import RunInfo, check_run_info
from zoo.trainers.run import Run
from zoo.trainers.specs import EngineSpec
from zoo.trainers.telemetry import (
    LogWindow,
    RankShares,
    StepFigures,
    clip_gradients,
    flops_per_unit,
    log_train,
    peak_flops,
    progress_bar,
    table_row,
)

__all__ = ["EngineTrainer", "FitResult", "Resume", "RunInfo", "train"]


def train(
    model: nn.Module,
    task: Task,
    spec: EngineSpec,
    runtime: Runtime,
    out: str | Path,
    *,
    resume: Resume = False,
    run_info: dict[str, Any] | None = None,
    save_artifact: Callable[[Path, nn.Module], Path] | None = None,
    on_checkpoint: Callable[[], None] | None = None,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    optimizer_spec: OptimizerSpec,
    schedule: Schedule,
) -> FitResult:
    """Run ``spec.max_steps`` optimizer steps of ``task`` on ``model``, writing under ``out``.

    ``out`` was prepared by the trainer with `run_directory`; with ``resume`` a checkpoint there
    is restored first (see `Resume`). ``on_checkpoint`` runs after each checkpoint; ``loggers``
    get every record (``metrics.jsonl`` is always written); ``callbacks`` run on every process,
    may stop the run early, and hear its end (``on_train_end``) before the model is saved.
    ``optimizer_spec`` and ``schedule`` are what ``spec`` names, resolved.
    """
    out = Path(out)
    with stop_requests() as request:  # from here SIGINT/SIGTERM stop at a step boundary (zoo.interrupts)
        run, wrapped = begin(model, spec, runtime, out, resume, run_info, callbacks, optimizer_spec)
        if not any(isinstance(lg, JsonlLogger) for lg in loggers):
            loggers = [JsonlLogger(), *loggers]
        log = Loggers(list(loggers), runtime.is_main)
        log.start(out, run.step)
        stepper = Stepper(model, wrapped, task, spec, runtime, run, schedule)
        bar = progress_bar(spec, run.step, enabled=runtime.is_main and spec.progress)
        try:
            stopped = steps(model, task, run, stepper, log, bar, request, on_checkpoint)
        finally:
            bar.close()
    if stopped is not None:  # a signal: the run is not over, its checkpoint is written
        log.close()
        raise stopped
    log.log({"step": run.step, "split": "ranks", **stepper.shares.gather(runtime)})
    log.close()
    return FitResult(out, run.step, run.metrics, finish(run, save_artifact))


def steps(
    model: nn.Module,
    task: Task,
    run: Run,
    stepper: Stepper,
    log: Loggers,
    bar: Any,
    request: StopRequest,
    on_checkpoint: Callable[[], None] | None,
) -> Stopped | None:
    """The step loop, to ``max_steps`` or a stop every process agrees on: a callback's (evaluated,
    checkpointed, the run ends) or a signal's, before the next step (checkpointed, and returned
    for the caller to raise: the run is not over)."""
    spec, saved = run.spec, -1
    while run.step < spec.max_steps:
        signum = int(run.runtime.dist.max_over_ranks([request.signum or 0])[0])
        if signum:
            return stop_here(run, stepper, log, bar, signum, saved, on_checkpoint)
        lr = stepper.step()
        step = run.step
        if stepper.skipped:
            scale = stepper.scaler.get_scale()
            log.log({"step": step, "split": "train", "event": "skipped", "loss_scale": scale})
            if run.is_main:
                bar.write(f"step {step}: fp16 gradient overflow, step skipped (loss scale -> {scale:g})")
        bar.update(1)
        if step % spec.log_every == 0 or step == spec.max_steps:
            stepper.log(lr, log, bar)
        run.notify("on_step_end")
        stop = run.stop_reason()
        if (spec.eval_every and step % spec.eval_every == 0) or step == spec.max_steps or stop is not None:
            evaluate(model, task, run, log, bar)
            stop = stop or run.stop_reason()
        if stop is not None:  # the last steps' figures, before the run ends early
            stepper.figures.check()
            if stepper.window.steps:
                stepper.log(lr, log, bar)
        if (spec.checkpoint_every and step % spec.checkpoint_every == 0) or step == spec.max_steps or stop:
            checkpoint(run, on_checkpoint)
            saved = step
        if stop is not None:
            log.log({"step": step, "split": "event", "event": "stopped", "reason": stop})
            if run.is_main:
                bar.write(f"step {step}: {stop}")
            break
    return None


def checkpoint(run: Run, on_checkpoint: Callable[[], None] | None) -> Path:
    """A ``step-N`` checkpoint now (a collective), then ``on_checkpoint`` and the callbacks hear of it."""
    path = run.write_checkpoint() or run.checkpointer.root / f"step-{run.step:08d}"
    if on_checkpoint is not None and run.is_main:
        on_checkpoint()
    run.notify("on_checkpoint", path)
    return path


def stop_here(
    run: Run,
    stepper: Stepper,
    log: Loggers,
    bar: Any,
    signum: int,
    saved: int,
    on_checkpoint: Callable[[], None] | None,
) -> Stopped:
    """A signal's stop: the last steps' figures logged, a checkpoint at this step (unless one was
    just written, or no step was trained yet), the event recorded; ``--resume`` continues exactly."""
    stepper.figures.check()
    if stepper.window.steps:
        stepper.log(stepper.lr, log, bar)
    if run.step == saved:
        path: Path | None = run.checkpointer.root / f"step-{run.step:08d}"
    else:
        path = checkpoint(run, on_checkpoint) if run.step > 0 else None
    log.log({"step": run.step, "split": "event", "event": "stopped", "reason": signal.Signals(signum).name})
    return Stopped(signum, run.step, path, is_main=run.is_main)


def begin(
    model: nn.Module,
    spec: EngineSpec,
    runtime: Runtime,
    out: Path,
    resume: Resume,
    run_info: dict[str, Any] | None,
    callbacks: Sequence[Callback],
    optimizer_spec: OptimizerSpec,
) -> tuple[Run, nn.Module]:
    """The run's state, restored from its checkpoint when it resumes (callbacks' state included),
    and the model as the runtime wraps it (compiled, DDP or FSDP)."""
    main = runtime.is_main
    checkpointer = Checkpointer(out, spec.keep_checkpoints, runtime.dist)
    if main:
        checkpointer.clean_stale()
    start = checkpointer.resume_point(resume, notes=main)
    info = json.loads(json.dumps(run_info or {}, default=str))
    check_run_info(out / RUN_FILE, info, resume=bool(resume), runtime=runtime)
    runtime.seed_everything()
    data_rng = torch.Generator().manual_seed(runtime.seed)
    model.train()
    wrapped = runtime.prepare(model)  # before the optimizer: FSDP shards the parameters it will hold
    optimizer = build_optimizer(optimizer_spec, model, spec.lr, runtime.device)
    state = checkpoints.TrainState(0, model, optimizer, runtime.grad_scaler(), data_rng, {})
    run = Run(out, state, spec, runtime)
    run.callbacks = list(callbacks)
    if start is not None:
        checkpoints.load_checkpoint(start, state, runtime.dist)
        run.restore_callbacks()
        runtime.dist.barrier()  # every rank has read its checkpoint before rank 0 moves any away
        if main:
            set_aside = checkpointer.set_aside_after(state.step)
            print(f"resuming from {start} (step {state.step})", file=sys.stderr)
            if set_aside:
                moved = ", ".join(set_aside)
                print(f"later checkpoints moved to {checkpointer.root / SET_ASIDE}: {moved}", file=sys.stderr)
        runtime.dist.barrier()
    elif resume and main:
        print(f"no checkpoint in {checkpointer.root}: starting from step 0", file=sys.stderr)
    return run, wrapped


class Stepper:
    """One optimizer step: the schedule's learning rate, ``grad_accum`` micro-batches (each
    process its slice) under autocast and loss scaling, clipping, and the step's figures."""

    def __init__(
        self,
        model: nn.Module,
        wrapped: nn.Module,
        task: Task,
        spec: EngineSpec,
        runtime: Runtime,
        run: Run,
        schedule: Schedule,
    ) -> None:
        self.model, self.wrapped, self.task, self.spec, self.runtime = model, wrapped, task, spec, runtime
        self.run, self.schedule = run, schedule
        self.world = runtime.dist.world_size
        self.micro = spec.batch_size // spec.grad_accum
        if self.micro % self.world:
            raise TrainingError(
                f"batch_size / grad_accum = {self.micro} must be divisible by the number of processes ({self.world})"
            )
        self.optimizer, self.scaler = run.state.optimizer, run.state.scaler
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.clip = spec.grad_clip if spec.grad_clip is not None else math.inf
        self.window = LogWindow(flops_per_unit=flops_per_unit(model, task.unit), peak=peak_flops(runtime))
        self.shares = RankShares()
        names = {id(p): name for name, p in model.named_parameters()}
        groups = self.optimizer.param_groups
        group_of = {id(p): g.get("name", str(i)) for i, g in enumerate(groups) for p in g["params"]}
        run.figures = StepFigures(
            [names.get(id(p), "?") for p in self.params],
            [group_of.get(id(p), "?") for p in self.params],
            self.window,
            run.checkpointer.last_good,
            scaled=self.scaler.is_enabled(),
        )
        self.figures = run.figures
        self.skipped = False  # the last step was an fp16 overflow the scaler skipped
        self.lr = math.nan  # the last step's learning rate

    def step(self) -> float:
        """Train one step; returns its learning rate."""
        spec, state, scaler = self.spec, self.run.state, self.scaler
        factor = self.schedule.factor(state.step, spec.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group.get("peak_lr", spec.lr) * factor
        step_loss = torch.zeros((), device=self.runtime.device)  # on the device: no sync per micro-step
        for i in range(spec.grad_accum):
            batch = _shard(self.task.sample(state.data_rng, self.micro), self.runtime.dist.rank, self.world)
            self.window.units += self.task.count(batch) * self.world
            self.shares.add(self.task.count(batch), batch[0])
            batch = self.runtime.to_device(batch)
            sync = contextlib.nullcontext() if i == spec.grad_accum - 1 else _no_sync(self.wrapped)
            with sync:
                with self.runtime.autocast():
                    loss = self.task.loss(self.wrapped, batch)
                scaler.scale(loss / spec.grad_accum).backward()
            step_loss += loss.detach().float() / spec.grad_accum
        scaler.unscale_(self.optimizer)
        self.figures.add(state.step + 1, step_loss, clip_gradients(self.params, self.clip))
        scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        self.skipped = scaler.is_enabled() and scaler.get_scale() < scale_before
        self.lr = spec.lr * factor
        return self.lr

    def log(self, lr: float, log: Loggers, bar: Any) -> None:
        """One training log line for the steps since the last (reads the figures off the device)."""
        self.figures.check()
        record = self.window.flush(self.runtime, self.run.step, lr, self.figures.grad_norm, self.task.unit)
        log_train(record, log, self.run.metrics, bar)


def evaluate(model: nn.Module, task: Task, run: Run, log: Loggers, bar: Any) -> None:
    """The task's evaluation, logged, shown and handed to the callbacks."""
    if run.figures is not None:
        run.figures.check()  # never evaluate weights a non-finite step has reached
    model.eval()
    with run.runtime.inference():
        val = task.evaluate(model, run.runtime, run.spec.eval_batches)
    model.train()
    run.metrics.update(val)
    log.log({"step": run.step, "split": "val", **val})
    if run.is_main:
        bar.write(table_row(run.step, run.metrics))
    run.notify("on_eval", val)


def finish(run: Run, save_artifact: Callable[[Path, nn.Module], Path] | None) -> Path | None:
    """The end of training: callbacks choose or add what is saved (``on_train_end``), then the
    model is saved as ``RUN/model`` and each model a callback added as ``RUN/NAME``."""
    run.notify("on_train_end")
    artifact = None
    dist = run.runtime.dist
    if save_artifact is not None:
        for name, module in {"model": run.model, **run.added}.items():
            final = dist.gathered(module)
            if run.is_main and final is not None:
                saved = save_artifact(run.out / name, final)
                artifact = artifact or saved
    dist.barrier()
    return artifact


def build_optimizer(spec: OptimizerSpec, model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """``spec.build(model, lr, device)``, checked: a plugin's optimizer must be a torch one."""
    optimizer = spec.build(model, lr, device)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise PluginError(
            f"optimizer type {spec.type!r}: build(model, lr, device) must return a torch.optim.Optimizer, "
            f"not {type(optimizer).__name__}"
        )
    return optimizer


class EngineTrainer:
    """Base of trainers built on the engine: a subclass says how to make its `Task`.

    ``fit`` checks the data (before ``out`` is touched), opens the run directory, makes the task,
    runs the engine, and adds the task's ``summary`` figures to the result.
    """

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.config: Config | None = None  # what `fit` was given: its registry has the data sources
        self.note: str | None = None  # what the schedule changed to fit the run (a clipped warmup)

    def registry(self) -> Registry:
        """The registry whose data sources read ``data`` (the default configuration's, unless
        ``fit`` was given a configuration)."""

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
        data: Any = None,
        resume: Resume = False,
        force: bool = False,
        run_info: dict[str, Any] | None = None,
        save_artifact: Callable[[Path, nn.Module], Path] | None = None,
        inputs: Iterable[tuple[str, str | Path | None]] = (),
        config: Config | None = None,
    ) -> FitResult:
        """Train ``model`` into the run folder ``out`` (see `zoo.protocols.Trainer`)."""
        refuse_quantized(model, "training")  # before the run folder is touched
        out = Path(out)
        self.config = config
        data = data if data is not None else self.spec.data
        # bad names fail before ``out`` is touched
        loggers, callbacks = self.build_loggers(), self.build_callbacks()
        optimizer, schedule = self.optimizer_spec(), self.build_schedule()
        self.check_data(model, data)
        if self.note and runtime.is_main:
            print(f"note: {self.note}", file=sys.stderr)
        with run_directory(
            out, resume=bool(resume), force=force, runtime=runtime, inputs=[("--data", as_path(data)), *inputs]
        ) as rundir:
            task = self.make_task(model, runtime, data, out / "data", bool(resume))
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
                loggers=loggers,
                callbacks=callbacks,
                optimizer_spec=optimizer,
                schedule=schedule,
            )
        result.metrics.update(task.summary)
        return result

    def build_loggers(self) -> list[Logger]:
        """The loggers the spec names, built (each checked against `zoo.protocols.Logger`)."""
        return [self._build("loggers", i, ref, Logger) for i, ref in enumerate(self.spec.loggers)]

    def build_callbacks(self) -> list[Callback]:
        """The callbacks the spec names, built (each checked against `zoo.protocols.Callback`)."""
        return [self._build("callbacks", i, ref, Callback) for i, ref in enumerate(self.spec.callbacks)]

    def optimizer_spec(self) -> OptimizerSpec:
        """The optimizer the spec names (built later, on the prepared model)."""
        spec = self._resolve("optimizers", "optimizer", self.spec.optimizer)
        assert isinstance(spec, OptimizerSpec)
        return spec

    def build_schedule(self) -> Schedule:
        """The schedule the spec names, checked against ``max_steps`` and built."""
        spec = self._resolve("schedules", "schedule", self.spec.schedule)
        assert isinstance(spec, ScheduleSpec)
        spec, self.note = spec.for_steps(self.spec.max_steps)
        try:
            spec.check_steps(self.spec.max_steps)
        except ValueError as err:
            raise SpecError([("schedule", str(err))]) from None
        built = spec.build()
        if not isinstance(built, Schedule):
            raise PluginError(
                f"schedule type {spec.type!r}: build() must return a zoo.Schedule (factor(step, max_steps))"
            )
        return built

    def _resolve(self, kind: Kind, where: str, ref: str | dict[str, Any]) -> Spec:
        try:
            return (self.config or default_config()).spec(kind, ref)
        except ZooError as err:
            raise SpecError([(where, str(err))]) from None

    def _build(self, kind: Kind, index: int, ref: str | dict[str, Any], protocol: type) -> Any:
        spec = self._resolve(kind, f"{kind}[{index}]", ref)
        built = spec.build()
        if not isinstance(built, protocol):
            raise PluginError(
                f"{kind[:-1]} type {spec.type!r}: build() must return a zoo.protocols.{protocol.__name__}; "
                f"{type(built).__name__} lacks some of its methods"
            )
        return built


def as_path(data: Any) -> str | Path | None:
    """``data`` if it names a file or folder; None for a dataset given from Python."""
    return data if isinstance(data, str | Path) else None


def data_key(data: Any) -> str:
    """A key for what ``data`` names (a path, or a dataset object given from Python)."""
    return str(data) if data is None or as_path(data) is not None else f"python:{type(data).__name__}:{id(data)}"


def _shard(batch: Batch, rank: int, world: int) -> Batch:
    if world == 1:
        return batch
    size = batch[0].shape[0] // world
    return tuple(t[rank * size : (rank + 1) * size] for t in batch)


def _no_sync(wrapped: nn.Module) -> contextlib.AbstractContextManager[Any]:
    no_sync = getattr(wrapped, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()
