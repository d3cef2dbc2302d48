"""The training engine: learning, exact resume, accumulation, clipping, schedules, non-finite stops."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import crash_sampling_at

import zoo
from zoo.runtime import Runtime
from zoo.trainers.classifier import ClassificationTask
from zoo.trainers.schedules import CosineSchedule, StepSchedule
from zoo.trainers.specs import ClassifierTrainerSpec

MODEL = {"type": "simplenet", "in_features": 8, "hidden": [32], "num_classes": 3, "dropout": 0.1}


def fit(config, out, *, model=None, **trainer):
    if model is None:
        torch.manual_seed(0)
        model = zoo.build_model(MODEL, config=config)
    spec = ClassifierTrainerSpec(**{"max_steps": 30, "batch_size": 16, "eval_every": 10, "progress": False, **trainer})
    return model, spec.build().fit(model, Runtime(device="cpu", seed=3), out)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_classifier_reaches_the_known_ceiling(config, tmp_path):
    _, result = fit(config, tmp_path / "r", max_steps=300, batch_size=64, lr=1e-2, synthetic={"label_noise": 0.2})
    ceiling = result.metrics["reachable_accuracy"]
    assert ceiling == pytest.approx(1 - 0.2 * (1 - 1 / 3))
    assert result.metrics["val_accuracy"] > ceiling - 0.08


def test_run_writes_metrics_checkpoints_and_refuses_to_clobber(config, tmp_path):
    fit(config, tmp_path / "r", checkpoint_every=10, keep_checkpoints=2)
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["split"] == "val"] == [10, 20, 30]
    assert all(math.isfinite(x["loss"]) for x in lines if x["split"] == "train")
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step-00000020", "step-00000030"]
    with pytest.raises(zoo.RunDirError, match="already holds a run; pass --resume"):
        fit(config, tmp_path / "r")


def test_interrupted_and_resumed_run_equals_uninterrupted(config, tmp_path, monkeypatch):
    kw = {"checkpoint_every": 10, "schedule": {"name": "cosine", "warmup_steps": 5}, "optimizer": {"weight_decay": 0.1}}
    straight, _ = fit(config, tmp_path / "a", **kw)

    restore = crash_sampling_at(monkeypatch, ClassificationTask, 17)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "b", **kw)
    restore()
    model = zoo.build_model(MODEL, config=config)  # fresh weights: the checkpoint must restore them
    spec = ClassifierTrainerSpec(max_steps=30, batch_size=16, eval_every=10, progress=False, **kw)
    spec.build().fit(model, Runtime(device="cpu", seed=3), tmp_path / "b", resume=True)
    a, b = weights(straight), weights(model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    pairs = [(x["step"], x["split"]) for x in lines]
    assert len(pairs) == len(set(pairs)), "resume must not duplicate metrics lines"
    assert [s for s, _ in pairs] == sorted(s for s, _ in pairs)


def test_gradient_accumulation_matches_large_batch(config, tmp_path):
    """Through the engine: 4 micro-batches of 16 per step train the weights one batch of 64 would.
    Plain SGD without clipping: the update is the gradient itself, so a gradient that is not the
    mean over the 4 micro-batches (a dropped ``/ grad_accum``) moves the weights 4x as far; Adam
    would hide it, normalising the step."""
    runs = {}
    sgd = {"optimizer": {"name": "sgd", "momentum": 0.0}, "grad_clip": None, "lr": 0.05}
    for accum in (1, 4):
        torch.manual_seed(0)
        model = zoo.build_model({**MODEL, "dropout": 0.0}, config=config)
        runs[accum], result = fit(config, tmp_path / f"acc{accum}", model=model, batch_size=64, grad_accum=accum, **sgd)
        assert result.steps == 30
    one, four = weights(runs[1]), weights(runs[4])
    torch.manual_seed(0)
    start = weights(zoo.build_model({**MODEL, "dropout": 0.0}, config=config))
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-2  # the weights really moved
    for k in one:  # float32 sums of 4 partial means vs one mean: ~1e-7 apart
        torch.testing.assert_close(four[k], one[k], atol=1e-6, rtol=0)


def test_schedules():
    cos = CosineSchedule(warmup_steps=10, min_lr_ratio=0.1)
    assert cos.factor(0, 110) == pytest.approx(0.1)
    assert cos.factor(9, 110) == pytest.approx(1.0)
    assert cos.factor(60, 110) == pytest.approx(0.55)
    assert cos.factor(110, 110) == pytest.approx(0.1)
    step = StepSchedule(step_size=10, gamma=0.5)
    assert [step.factor(s, 100) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize("optimizer", ["adamw", "adam", "sgd"])
def test_each_optimizer_trains(config, tmp_path, optimizer):
    _, result = fit(
        config,
        tmp_path / optimizer,
        max_steps=100,
        lr=0.05 if optimizer == "sgd" else 3e-3,
        optimizer={"name": optimizer},
    )
    assert result.metrics["val_accuracy"] > 0.6


def test_gradient_clipping_bounds_the_update(config, tmp_path):
    model = zoo.build_model({**MODEL, "dropout": 0.0}, config=config)
    before = weights(model)
    fit(
        config,
        tmp_path / "clip",
        model=model,
        max_steps=1,
        lr=1.0,
        grad_clip=1e-3,
        optimizer={"name": "sgd", "momentum": 0.0},
    )
    delta = torch.sqrt(sum(((model.state_dict()[k] - before[k]) ** 2).sum() for k in before))
    assert float(delta) == pytest.approx(1e-3, rel=1e-3)


def nan_loss_at_call(monkeypatch, n: int) -> None:
    """The classifier's n-th loss (step n, without accumulation) comes out NaN."""
    real = ClassificationTask.loss
    calls = {"n": 0}

    def nan_at(self, model, batch):
        calls["n"] += 1
        loss = real(self, model, batch)
        return loss * float("nan") if calls["n"] == n else loss

    monkeypatch.setattr(ClassificationTask, "loss", nan_at)


def test_non_finite_loss_stops_naming_the_step(config, tmp_path, monkeypatch):
    nan_loss_at_call(monkeypatch, 12)
    with pytest.raises(
        zoo.TrainingError, match=r"non-finite loss \(nan\) at step 12; last good checkpoint kept: .*step-00000010"
    ):
        fit(config, tmp_path / "nan", checkpoint_every=10)
    assert (tmp_path / "nan" / "checkpoints" / "step-00000010").is_dir()


def test_a_non_finite_step_is_caught_before_the_next_checkpoint_is_written(config, tmp_path, monkeypatch):
    """Losses stay on the device between log lines; a checkpoint is a point where they are read,
    so no checkpoint ever holds weights a non-finite step has reached."""
    nan_loss_at_call(monkeypatch, 12)
    with pytest.raises(zoo.TrainingError, match=r"non-finite loss \(nan\) at step 12; .*step-00000010"):
        fit(config, tmp_path / "nan", checkpoint_every=5, log_every=100, eval_every=0)
    assert sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir()) == ["step-00000005", "step-00000010"]


def test_training_reads_nothing_back_from_the_device_between_log_lines(config, tmp_path):
    """No host sync per step or micro-step (each one stalls a GPU): the number of tensor-to-Python
    reads in a run does not grow with its steps or its gradient accumulation."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountReads.reads += func is torch.ops.aten._local_scalar_dense.default  # .item(), float(t)
            return func(*args, **(kwargs or {}))

    counts = []
    for steps, accum in ((8, 1), (24, 4)):
        CountReads.reads = 0
        with CountReads():  # SGD: torch's Adam reads its CPU step counter, which is no device sync
            fit(
                config,
                tmp_path / f"r{steps}",
                max_steps=steps,
                grad_accum=accum,
                log_every=steps,
                eval_every=0,
                optimizer={"name": "sgd"},
            )
        counts.append(CountReads.reads)
    assert counts[0] == counts[1] and counts[0] <= 4, counts


def test_bf16_mixed_training_on_cpu(config, tmp_path):
    model = zoo.build_model(MODEL, config=config)
    spec = ClassifierTrainerSpec(max_steps=20, batch_size=16, progress=False)
    result = spec.build().fit(model, Runtime(device="cpu", precision="bf16-mixed"), tmp_path / "bf16")
    assert math.isfinite(result.metrics["val_loss"])
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_train_from_config_saves_a_loadable_model(config, tmp_path):
    from zoo.training import train_from_config

    result = train_from_config(
        config, "simplenet-small", {"type": "classifier", "max_steps": 5, "progress": False}, tmp_path / "r"
    )
    loaded = zoo.load(result.artifact, config=config)
    assert loaded.zoo_spec == config.spec("models", "simplenet-small")


def test_wrong_protocol_fails_at_build_time(config):
    from zoo.specs import TrainerSpec

    class LMTrainerSpec(TrainerSpec):
        protocol = "causal-lm"
        type: str = "lm-x"

    with pytest.raises(
        zoo.ProtocolError, match="'lm-x' works on causal-lm models, but model type 'simplenet' is a classifier"
    ):
        zoo.api.check_protocol(LMTrainerSpec(), "simplenet-small", config=config)


def test_fused_adamw_when_asked_and_on_cuda_by_default(config):
    from zoo.trainers.engine import build_optimizer
    from zoo.trainers.optimizers import AdamWSpec

    model = zoo.build_model(MODEL, config=config)
    cpu = torch.device("cpu")
    assert not build_optimizer(AdamWSpec(), model, 1e-3, cpu).defaults["fused"]  # auto: CUDA only
    fused = build_optimizer(AdamWSpec(fused=True), model, 1e-3, cpu)  # torch has a fused CPU AdamW too
    assert fused.defaults["fused"] is True


def test_runtime_compile_trains_and_saves_the_plain_model(config, tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model({"type": "simplenet", "in_features": 8, "hidden": [16], "num_classes": 3}, config=config)
    spec = ClassifierTrainerSpec(max_steps=3, batch_size=16, progress=False)
    runtime = Runtime(device="cpu", compile=True)
    result = spec.build().fit(
        model, runtime, tmp_path / "r", save_artifact=lambda p, m: zoo.save(m, p, config=config, overwrite=True)
    )
    loaded = zoo.load(result.artifact, config=config)  # keys without torch.compile's _orig_mod prefix
    x = torch.randn(4, 8)
    assert torch.equal(loaded(x), model.eval()(x))
