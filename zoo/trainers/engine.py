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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from zoo import checkpoints
from zoo.config import Config
from zoo.errors import ArtifactError, PluginError, RunDirError, SpecError, TrainingError, ZooError
from zoo.files import LENIENT, read_model
from zoo.protocols import Batch, Callback, Logger, Schedule, Task
from zoo.registry import Registry
from zoo.rundir import RUN_FILE, run_directory
from zoo.runtime import Runtime
from zoo.specs import Kind, OptimizerSpec, ScheduleSpec, Spec
from zoo.trainers.loggers import JsonlLogger, Loggers
from zoo.trainers.specs import EngineSpec


@dataclass
class FitResult:
    out: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifact: Path | None = None


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

    def __init__(self, names: list[str], groups: list[str], window: LogWindow, root: Path, scaled: bool) -> None:
        self.names, self.groups, self.window, self.root, self.scaled = names, groups, window, root, scaled
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
                    + _last_good(self.root)
                    + "; lower lr, enable grad_clip, or use bf16-mixed/fp32"
                )
            if not math.isfinite(total) and not self.scaled:
                bad = [f"{self.names[i]} (param group {self.groups[i]!r})" for i in (~row.isfinite()).nonzero()[:, 0]]
                where = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                raise TrainingError(f"non-finite gradient at step {step} in {where}; " + _last_good(self.root))
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


class RunInfo(BaseModel):
    """``run.json``: what a run was started with (a resume must match its model)."""

    model_config = LENIENT
    model: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    init_from: dict[str, Any] | None = None  # the parent of a fine-tune: {"path", "sha256"} (+ a hub's revision, files)


Resume = bool | str | Path  # False: a new run; True or "last": the latest checkpoint; "best"; a checkpoint folder


class Run:
    """What callbacks see of a run (`zoo.protocols.TrainingRun`), and how they save a checkpoint."""

    def __init__(self, out: Path, state: checkpoints.TrainState, spec: EngineSpec, runtime: Runtime) -> None:
        self.out, self.state, self.spec, self.runtime = out, state, spec, runtime
        self.max_steps = spec.max_steps
        self.is_main = runtime.is_main
        self.figures: StepFigures | None = None
        self.metrics: dict[str, float] = {}
        self.callbacks: list[Any] = []
        self.pending: list[str] = []  # named checkpoints callbacks asked for during the current event

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def loss(self) -> float:
        """The last step's training loss on this process (read from the device when asked)."""
        if self.figures is None:
            return math.nan
        self.figures.check()
        return self.figures.last_loss

    def save_checkpoint(self, name: str) -> None:
        """Ask for the full state as ``checkpoints/NAME`` (replacing one of that name), written once
        every callback has seen the current event, so it holds their updated state too."""
        plain = name.replace("-", "").replace("_", "").isalnum() and name[:1].isalpha()
        if not plain or name == checkpoints.SET_ASIDE or checkpoints.STEP_DIR.match(name):
            raise TrainingError(f"checkpoint name {name!r}: use letters, digits, '-' and '_' (e.g. 'best')")
        if name not in self.pending:
            self.pending.append(name)

    def notify(self, event: str, *args: Any) -> None:
        """Call ``callback.EVENT(run, *args)`` on every callback, then write the checkpoints they asked for."""
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)
        while self.pending:
            self.write_checkpoint(self.pending.pop(0))

    def write_checkpoint(self, name: str | None = None) -> Path | None:
        """The full state now, with every callback's: ``checkpoints/step-N`` (the last ``keep``
        are kept), or ``checkpoints/NAME``. A collective; returns the path on rank 0."""
        if self.figures is not None:  # never save weights a non-finite step has reached
            self.figures.check()
        self.state.extra["callbacks"] = [{"type": type(cb).__name__, "state": cb.state_dict()} for cb in self.callbacks]
        root = self.out / "checkpoints"
        try:  # every rank: gathering a sharded state is a collective; rank 0 writes
            path = checkpoints.save_checkpoint(root, self.state, self.spec.keep_checkpoints, self.runtime.dist, name)
        except ArtifactError as err:
            raise TrainingError(
                f"checkpoint at step {self.step} could not be written ({err}); " + _last_good(root)
            ) from None
        self.runtime.dist.barrier()
        return path

    def restore_callbacks(self) -> None:
        saved = self.state.extra.get("callbacks", [])
        for i, cb in enumerate(self.callbacks):
            entry = saved[i] if isinstance(saved, list) and i < len(saved) else None
            if isinstance(entry, dict) and entry.get("type") == type(cb).__name__:
                cb.load_state_dict(entry.get("state") or {})


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
    get every record (``metrics.jsonl`` is always written); ``callbacks`` run on every process
    and may stop the run early. ``optimizer_spec`` and ``schedule`` are what ``spec`` names, resolved.
    """
    out = Path(out)
    main = runtime.is_main
    ckpt_root = out / "checkpoints"
    if main:
        checkpoints.clean_stale(out)
    start = resume_point(ckpt_root, resume)
    info = json.loads(json.dumps(run_info or {}, default=str))
    _check_run_info(out / RUN_FILE, info, resume=bool(resume), runtime=runtime)

    runtime.seed_everything()
    data_rng = torch.Generator().manual_seed(runtime.seed)
    model.train()
    wrapped = runtime.prepare(model)
    optimizer = build_optimizer(optimizer_spec, model, spec.lr, runtime.device)
    scaler = runtime.grad_scaler()
    state = checkpoints.TrainState(0, model, optimizer, scaler, data_rng, {})
    run = Run(out, state, spec, runtime)
    run.callbacks = list(callbacks)
    if not any(isinstance(lg, JsonlLogger) for lg in loggers):
        loggers = [JsonlLogger(), *loggers]
    log = Loggers(list(loggers), main)
    if start is not None:
        checkpoints.load_checkpoint(start, state, runtime.dist)
        run.restore_callbacks()
        if main:
            set_aside = checkpoints.set_aside_after(ckpt_root, state.step)
            print(f"resuming from {start} (step {state.step})", file=sys.stderr)
            if set_aside:
                moved = ", ".join(set_aside)
                print(f"later checkpoints moved to {ckpt_root / checkpoints.SET_ASIDE}: {moved}", file=sys.stderr)
        runtime.dist.barrier()
    elif resume and main:
        print(f"no checkpoint in {ckpt_root}: starting from step 0", file=sys.stderr)
    log.start(out, state.step)

    world = runtime.dist.world_size
    micro = spec.batch_size // spec.grad_accum
    if micro % world:
        raise TrainingError(f"batch_size / grad_accum = {micro} must be divisible by the number of processes ({world})")
    params = [p for p in model.parameters() if p.requires_grad]
    clip = spec.grad_clip if spec.grad_clip is not None else math.inf
    bar = _progress(spec, state.step, enabled=main and spec.progress)
    window = LogWindow(flops_per_unit=flops_per_unit(model, task.unit), peak=peak_flops(runtime))
    shares = RankShares()
    names = {id(p): name for name, p in model.named_parameters()}
    group_of = {id(p): g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
    figures = StepFigures(
        [names.get(id(p), "?") for p in params],
        [group_of.get(id(p), "?") for p in params],
        window,
        ckpt_root,
        scaled=scaler.is_enabled(),
    )
    run.figures = figures
    metrics = run.metrics
    step = state.step
    try:
        while step < spec.max_steps:
            factor = schedule.factor(step, spec.max_steps)
            lr = spec.lr * factor
            for group in optimizer.param_groups:
                group["lr"] = group.get("peak_lr", spec.lr) * factor
            step_loss = torch.zeros((), device=runtime.device)  # on the device: no sync per micro-step
            for i in range(spec.grad_accum):
                batch = _shard(task.sample(data_rng, micro), runtime.dist.rank, world)
                window.units += task.count(batch) * world
                shares.add(task.count(batch), batch[0])
                batch = runtime.to_device(batch)
                sync = contextlib.nullcontext() if i == spec.grad_accum - 1 else _no_sync(wrapped)
                with sync:
                    with runtime.autocast():
                        loss = task.loss(wrapped, batch)
                    scaler.scale(loss / spec.grad_accum).backward()
                step_loss += loss.detach().float() / spec.grad_accum
            scaler.unscale_(optimizer)
            figures.add(step + 1, step_loss, clip_gradients(params, clip))
            scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            state.step = step
            if scaler.is_enabled() and scaler.get_scale() < scale_before:
                log.log({"step": step, "split": "train", "event": "skipped", "loss_scale": scaler.get_scale()})
                if main:
                    bar.write(
                        f"step {step}: fp16 gradient overflow, step skipped (loss scale -> {scaler.get_scale():g})"
                    )
            bar.update(1)
            if step % spec.log_every == 0 or step == spec.max_steps:
                figures.check()
                _log_train(window.flush(runtime, step, lr, figures.grad_norm, task.unit), log, metrics, bar)
            run.notify("on_step_end")
            stop = _stop_reason(run)
            final = step == spec.max_steps or stop is not None
            if (spec.eval_every and step % spec.eval_every == 0) or final:
                figures.check()  # never evaluate weights a non-finite step has reached
                model.eval()
                with runtime.inference():
                    val = task.evaluate(model, runtime, spec.eval_batches)
                model.train()
                metrics.update(val)
                log.log({"step": step, "split": "val", **val})
                if main:
                    bar.write(_table_row(step, metrics))
                run.notify("on_eval", val)
                stop = stop or _stop_reason(run)
                final = final or stop is not None
            if stop is not None:  # the last steps' figures, before the run ends early
                figures.check()
                if window.steps:
                    _log_train(window.flush(runtime, step, lr, figures.grad_norm, task.unit), log, metrics, bar)
            if (spec.checkpoint_every and step % spec.checkpoint_every == 0) or final:
                path = run.write_checkpoint() or ckpt_root / f"step-{step:08d}"
                if on_checkpoint is not None and main:
                    on_checkpoint()
                run.notify("on_checkpoint", path)
            if stop is not None:
                log.log({"step": step, "split": "event", "event": "stopped", "reason": stop})
                if main:
                    bar.write(f"step {step}: {stop}")
                break
    finally:
        bar.close()
    log.log({"step": step, "split": "ranks", **shares.gather(runtime)})
    log.close()
    artifact = None
    if save_artifact is not None:
        final_model = runtime.dist.gathered(model)
        if main and final_model is not None:
            artifact = save_artifact(out / "model", final_model)
    runtime.dist.barrier()
    return FitResult(out, step, metrics, artifact)


def build_optimizer(spec: OptimizerSpec, model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """``spec.build(model, lr, device)``, checked: a plugin's optimizer must be a torch one."""
    optimizer = spec.build(model, lr, device)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise PluginError(
            f"optimizer type {spec.type!r}: build(model, lr, device) must return a torch.optim.Optimizer, "
            f"not {type(optimizer).__name__}"
        )
    return optimizer


def resume_point(root: Path, resume: Resume) -> Path | None:
    """The checkpoint a run continues from: None for a new run (or a resumed one with none yet)."""
    if resume is False:
        return None
    if resume is True or resume == "last":
        return checkpoints.latest(root)
    if resume == "best":
        best = root / "best"
        if not (best / "state.json").is_file():
            raise RunDirError(
                f"no best checkpoint in {root}: a trainer with the best-checkpoint callback keeps one "
                "(callbacks = ['best-checkpoint']); resume with --resume last instead"
            )
        return best
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise RunDirError(f"{path}: not a checkpoint folder (no state.json); give one under RUN/checkpoints")
    return path


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
        data: Any = None,
        resume: Resume = False,
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
        # bad names fail before ``out`` is touched
        loggers, callbacks = self.build_loggers(), self.build_callbacks()
        optimizer, schedule = self.optimizer_spec(), self.build_schedule()
        self.check_data(model, data)
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
        from zoo.api import default_config

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


def _stop_reason(run: Run) -> str | None:
    """Why a callback stops the run; every process stops when any does (else the others would hang)."""
    if not run.callbacks:
        return None
    why = next((why for cb in run.callbacks if (why := cb.should_stop(run))), None)
    if run.runtime.dist.any_failed(why is not None) and why is None:
        why = "a callback on another process asked to stop"
    return why


def _log_train(record: dict[str, Any], log: Loggers, metrics: dict[str, float], bar: Any) -> None:
    log.log(record)
    metrics["train_loss"] = record["loss"]
    bar.set_postfix(_postfix(record))


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    """What the progress bar shows: the figures of the last log record."""
    shown = {"loss": f"{record['loss']:.4f}", "lr": f"{record['lr']:.2e}", "gnorm": f"{record['grad_norm']:.3g}"}
    for key, value in record.items():
        if key.endswith("_per_s"):  # tokens_per_s -> tokens/s
            shown[f"{key[: -len('_per_s')]}/s"] = f"{value:,.0f}"
    if "mfu" in record:
        shown["mfu"] = f"{record['mfu']:.1%}"
    return shown


def _table_row(step: int, metrics: dict[str, float]) -> str:
    cells = [f"step {step:>6}"] + [f"{k} {v:.4f}" for k, v in metrics.items()]
    return " | ".join(cells)
