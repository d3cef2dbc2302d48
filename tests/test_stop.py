"""A stopped run loses nothing: Ctrl-C (SIGINT) and SIGTERM stop `zoo train` at the next step with a
checkpoint there, keep the run folder and its records, exit 130/143 with the command that
continues it, which ends exactly where an uninterrupted run ends; a second signal stops at once.
`--force` killed at any moment (SIGKILL too) is finished by the next `zoo train`: nothing hidden.
Real processes, signals at random moments."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import warm

import zoo
from zoo.checkpointer import Checkpointer
from zoo.rundir import left_aside
from zoo.storage import read_tensors

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 200,  # the signal comes by step 28: on a quiet machine the rest must outlast its delivery
    "batch_size": 4,
    "context": 32,
    "checkpoint_every": 1000,  # only the final one and the stop's: a stop before any is the usual case
    "eval_every": 20,
    "eval_batches": 1,
    "log_every": 1,  # every step's loss in metrics.jsonl: compared, and the moment to signal
    "progress": False,
    "schedule": {"name": "cosine", "warmup_steps": 5},
}
OLD = {**TRAINER, "max_steps": 3, "schedule": {"name": "cosine", "warmup_steps": 1}}  # a run --force replaces
NEW = {**TRAINER, "max_steps": 100000, "checkpoint_every": 10}  # the replacing run: killed long before its end


def command(out: Path, corpus: Path, *extra: str, trainer: dict | None = None) -> list[str]:
    return [
        *("zoo", "train", "--model", json.dumps(MODEL), "--trainer", json.dumps(trainer or TRAINER)),
        *("--data", str(corpus), "--out", str(out), "--device", "cpu", *extra),
    ]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    """`python -m zoo ...` in a process of its own (started warm: tests/warm.py)."""
    assert cmd[0] == "zoo"
    return warm.run(cmd[1:], capture_output=True, text=True, timeout=300, **kw)


def start(cmd: list[str]) -> warm.Process:
    """`python -m zoo ...` as from a terminal (SIGINT not ignored, whatever this test runner inherited)."""
    return warm.Process(cmd[1:], stderr=subprocess.PIPE, text=True)


def wait_for(ready, proc: warm.Process, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return read_tensors(out / "model" / "model.safetensors")


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def losses(out: Path) -> list[tuple[int, str, float]]:
    """Every step's training loss and every evaluation, from ``metrics.jsonl``."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], r.get("loss", r.get("val_loss"))) for r in rows if r["split"] in ("train", "val")]


def trained_to(out: Path) -> int:
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []
    return max((r["step"] for r in rows if r["split"] == "train"), default=0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    res = run(command(out, corpus), cold=True)  # what the warm runs must equal: a process as users start it
    assert res.returncode == 0, res.stderr
    return out


def stop_and_resume(trial: int, tmp_path: Path, corpus: Path, reference: Path) -> None:
    """A first run, signalled at a random moment once its folder exists, then the printed command."""
    rng = random.Random(trial)
    sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
    out = tmp_path / "run"
    proc = start(command(out, corpus))
    at = rng.randint(1, 28)  # mid-step, mid-log, mid-evaluation (step 20), between
    wait_for(lambda: trained_to(out) >= at, proc)
    time.sleep(rng.uniform(0.0, 0.05))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: stopped at step "), err  # one line
    step = int(lines[0].split()[4])
    assert 0 < step < TRAINER["max_steps"]
    assert Checkpointer(out).latest() == out / "checkpoints" / f"step-{step:08d}"
    assert (out / "run.json").is_file() and (out / "metrics.jsonl").is_file()  # the records stay
    resume = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert resume == [*command(out, corpus), "--resume"]
    done = run(resume)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {out / 'checkpoints' / f'step-{step:08d}'}" in done.stderr
    assert same(weights(out), weights(reference))
    assert losses(out) == losses(reference)  # every step's loss and every evaluation, to the last digit


@pytest.mark.parametrize("trial", range(2))  # SIGINT, SIGTERM
def test_a_signal_stops_with_a_checkpoint_and_the_printed_command_resumes_exactly(trial, tmp_path, corpus, reference):
    stop_and_resume(trial, tmp_path, corpus, reference)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2, 12))
def test_signals_at_random_moments(trial, tmp_path, corpus, reference):
    stop_and_resume(trial, tmp_path, corpus, reference)


def test_a_second_signal_stops_at_once_without_a_traceback_or_a_partial_file(tmp_path, corpus, reference):
    out = tmp_path / "run"
    slow = {**TRAINER, "max_steps": 100000}
    proc = start(command(out, corpus, trainer=slow))
    wait_for(lambda: trained_to(out) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGINT)  # at once: before the step ends, or while its checkpoint is written
    _, err = proc.communicate(timeout=120)
    # the one handled second stops the process (Python runs pending handlers in signal order)
    assert (proc.returncode, err.strip()) in ((130, "zoo: interrupted"), (143, "zoo: terminated")), err
    assert (out / "run.json").is_file() and (out / "metrics.jsonl").is_file()
    leftovers = [p.name for p in (out / "checkpoints").glob(".*")] if (out / "checkpoints").is_dir() else []
    assert not leftovers, leftovers
    done = run(command(out, corpus, "--resume", trainer=slow | {"max_steps": 20}))
    assert done.returncode == 0, done.stderr  # resumable: from its checkpoint, or from scratch


def test_a_stopped_force_has_replaced_the_old_run(tmp_path, corpus, reference):
    """`--force` stopped after the new run's first checkpoint: the old run is gone at once (the
    stop's checkpoint made the new run safe), and `--resume` continues the new one."""
    out = tmp_path / "run"
    assert run(command(out, corpus, trainer=OLD)).returncode == 0
    proc = start(command(out, corpus, "--force", trainer=NEW))
    wait_for(lambda: bool(left_aside(out)) and trained_to(out) >= 2, proc)  # the new run's steps
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not left_aside(out), "the replaced run must be gone once the new one has a checkpoint"
    assert json.loads((out / "run.json").read_text())["trainer"]["max_steps"] == NEW["max_steps"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def new_checkpoint(out: Path) -> bool:
    """The replacing run (NEW) has a checkpoint in ``out``: not the old run's final step 3."""
    latest = Checkpointer(out).latest()
    return latest is not None and latest.name >= f"step-{NEW['checkpoint_every']:08d}"


def force_killed(trial: int, tmp_path: Path, corpus: Path) -> None:
    """An old run, then `--force` killed (SIGKILL) at a random moment; the next `zoo train` on
    that --out finishes the replacement: the old run back byte for byte (new run without a
    checkpoint), or the new run kept and the old one gone; nothing left beside it."""
    rng = random.Random(100 + trial)
    out = tmp_path / "run"
    assert run(command(out, corpus, trainer=OLD)).returncode == 0
    old = {k: v for k, v in snapshot(out).items() if k != ".zoo.lock"}
    proc = start(command(out, corpus, "--force", trainer=NEW))
    if trial == 0:  # after the new run's first checkpoint (step 10; the old run's is step 3), which
        # the old run aside may not outlive long: waiting for both can miss that window
        wait_for(lambda: new_checkpoint(out), proc)
    elif trial == 1:  # the new run trains, no checkpoint yet
        wait_for(lambda: bool(left_aside(out)) and trained_to(out) >= 1, proc)
    else:  # anywhere: start-up, moving the old run aside, tokenizing, training, deleting the old run
        target = rng.uniform(-3, 15)
        wait_for(lambda: target < 0 or (bool(left_aside(out)) and trained_to(out) >= target), proc)
        time.sleep(rng.uniform(0, 3) if target < 0 else 0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    aside = left_aside(out)
    new_is_safe = Checkpointer(out).latest() is not None
    if trial == 0:  # the old run may already be gone: the new run removes it once it has a checkpoint
        assert new_is_safe
    if trial == 1:
        assert aside and not new_is_safe
    if aside and not new_is_safe:  # the old run, whole, aside
        assert {k: v for k, v in snapshot(aside[0]).items() if k != ".zoo.lock"} == old
    nxt = run(command(out, corpus, "--resume", trainer=OLD))
    assert nxt.returncode == 0 and "Traceback" not in nxt.stderr, nxt.stderr
    assert not left_aside(out), "nothing may stay hidden beside the run"
    latest = Checkpointer(out).latest()
    if aside and new_is_safe:  # the new run continues
        assert "removed" in nxt.stderr and latest is not None and latest.name >= "step-00000010"
    elif aside:  # the old run continues
        assert "put back" in nxt.stderr and latest == out / "checkpoints" / "step-00000003"


@pytest.mark.parametrize("trial", range(2))
def test_force_killed_before_or_after_the_new_runs_first_checkpoint(trial, tmp_path, corpus):
    force_killed(trial, tmp_path, corpus)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(2, 10))
def test_force_killed_at_random_moments(trial, tmp_path, corpus):
    force_killed(trial, tmp_path, corpus)


def test_an_empty_newer_step_folder_is_passed_over_with_a_note(tmp_path, corpus, reference, capsys):
    out = tmp_path / "run"
    zoo.train({**TRAINER, "checkpoint_every": 10, "max_steps": 30}, out, model=MODEL, data=str(corpus), config=_cpu())
    (out / "checkpoints" / "step-00000040").mkdir()  # empty: a copy or a disk that gave up
    capsys.readouterr()
    zoo.train(TRAINER, out, model=MODEL, data=str(corpus), config=_cpu(), resume=True)
    err = capsys.readouterr().err
    assert "step-00000040 is incomplete" in err and "step-00000030 (step 30)" in err, err


def test_a_library_program_stops_on_ctrl_c_with_a_checkpoint(tmp_path, corpus, reference):
    """`zoo.train` in a program's main thread: Ctrl-C stops at the next step with a checkpoint and
    raises `zoo.Stopped` (a KeyboardInterrupt), and the handlers are the program's again after."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a program's main thread (not xdist's)
    out, done = tmp_path / "lib", threading.Event()

    def ctrl_c() -> None:  # at step 5, once
        while not done.is_set() and trained_to(out) < 5:
            time.sleep(0.01)
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=ctrl_c)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt) as stopped:
            zoo.train(TRAINER, out, model=MODEL, data=str(corpus), config=_cpu())
    finally:
        done.set()
        presser.join()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
        signal.signal(signal.SIGINT, before)
    assert isinstance(stopped.value, zoo.Stopped) and stopped.value.signum == signal.SIGINT
    assert stopped.value.checkpoint == out / "checkpoints" / f"step-{stopped.value.step:08d}"
    zoo.train(TRAINER, out, model=MODEL, data=str(corpus), config=_cpu(), resume=True)
    assert same(weights(out), weights(reference))


def test_training_in_another_thread_leaves_the_signal_handlers_alone(tmp_path, corpus):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            zoo.train(OLD, tmp_path / "t", model=MODEL, data=str(corpus), config=_cpu())
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert not errors and (tmp_path / "t" / "model").is_dir()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def _cpu() -> zoo.Config:
    """What the command line above reads (the repository's registry.toml), on the CPU."""
    return zoo.load_config(Path(__file__).resolve().parents[1] / "registry.toml", ["runtime.device=cpu"], env={})
