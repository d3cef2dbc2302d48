"""Crashes lose nothing: SIGKILL at random moments (and mid-checkpoint), then --resume ends with
exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
import warm

from zoo.checkpointer import Checkpointer
from zoo.storage import read_tensors


def latest(root: Path) -> Path | None:
    return Checkpointer(root.parent).latest()


MODEL = {
    "type": "minigpt",
    "vocab_size": 256,
    "d_model": 128,
    "n_layers": 2,
    "n_heads": 4,
    "max_seq_len": 64,
    "dropout": 0.1,
}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 48,
    "batch_size": 4,
    "context": 32,
    "checkpoint_every": 4,
    "keep_checkpoints": 3,
    "eval_every": 24,
    "eval_batches": 1,
    "progress": False,
    "schedule": {"name": "cosine", "warmup_steps": 4},
}


def command(out: Path, corpus: Path, *extra: str) -> list[str]:
    """`python -m zoo ...`'s arguments (started warm: tests/warm.py)."""
    return [
        "train",
        "--model",
        json.dumps(MODEL),
        "--trainer",
        json.dumps(TRAINER),
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "run"
    warm.run(command(out, corpus), check=True, capture_output=True, cold=True)  # as users start it
    return read_tensors(out / "model" / "model.safetensors")


def kill_when(proc: warm.Process, ready) -> None:
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()


def assert_latest_checkpoint_loads(out: Path) -> None:
    import zoo
    from zoo.checkpoints import TrainState, load_checkpoint

    last = latest(out / "checkpoints")
    if last is None:
        return
    model = zoo.build_model(MODEL)
    opt = torch.optim.AdamW(model.parameters())
    state = TrainState(0, model, opt, torch.amp.GradScaler("cpu", enabled=False), torch.Generator(), {})
    from zoo.trainers.engine import build_optimizer
    from zoo.trainers.optimizers import AdamWSpec

    state.optimizer = build_optimizer(AdamWSpec(), model, 1e-3, torch.device("cpu"))
    load_checkpoint(last, state)
    assert state.step == int(last.name.split("-")[1])


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_then_resume_matches_an_uninterrupted_run(trial, tmp_path, corpus, reference):
    out = tmp_path / "run"
    proc = warm.Process(command(out, corpus), stdout=warm.DEVNULL, stderr=warm.DEVNULL)
    root = out / "checkpoints"
    if trial == 0:  # the moment a checkpoint starts being written
        kill_when(proc, lambda: root.is_dir() and any(p.name.startswith(".step-") for p in root.iterdir()))
    else:  # at a random moment once training runs: mid-step, mid-checkpoint, mid-log, between
        delay = random.Random(trial).uniform(0.0, 0.7)  # 48 steps: ~1 s after run.json (warm, quiet)
        started: list[float] = []

        def ready() -> bool:
            if not started and (out / "run.json").exists():
                started.append(time.monotonic())
            return bool(started) and time.monotonic() - started[0] >= delay

        kill_when(proc, ready)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert_latest_checkpoint_loads(out)
    done = warm.run(command(out, corpus, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = read_tensors(out / "model" / "model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    leftovers = [p.name for p in [*out.iterdir(), *root.iterdir()] if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3, 13))
def test_sigkill_at_random_times(trial, tmp_path, corpus, reference):
    test_sigkill_then_resume_matches_an_uninterrupted_run(trial, tmp_path, corpus, reference)


def test_killed_before_any_checkpoint_resumes_from_scratch(tmp_path, corpus, reference):
    out = tmp_path / "run"
    proc = warm.Process(command(out, corpus), stdout=warm.DEVNULL, stderr=warm.DEVNULL)
    kill_when(proc, lambda: (out / "data" / "tokens.bin").exists())
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert latest(out / "checkpoints") is None, "a checkpoint was written before the kill"
    done = warm.run(command(out, corpus, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = read_tensors(out / "model" / "model.safetensors")
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert os.path.isdir(out / "checkpoints")
