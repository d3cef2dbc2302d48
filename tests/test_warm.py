"""tests/warm.py, which many process tests use, starts what `python -m zoo` starts: the same output,
exit codes and files, its own pid, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import warm

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 32}
TRAINER = {"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 8, "eval_every": 0, "progress": False}


def test_a_warm_process_is_the_cold_one(tmp_path, corpus):
    def both(*args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        hot = warm.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        cold = warm.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120, cold=True)
        return hot, cold

    hot, cold = both("train", "--model", "no-such-model", "--trainer", "lm-tiny", "--out", "x")
    assert hot.returncode == cold.returncode == 2 and hot.stderr == cold.stderr and "no-such-model" in hot.stderr
    train = ["train", "--model", json.dumps(MODEL), "--trainer", json.dumps(TRAINER), "--data", str(corpus)]
    hot, cold = both(*train, "--out", "run", "--device", "cpu", "--force")
    assert hot.returncode == cold.returncode == 0, hot.stderr + cold.stderr
    assert hot.stdout == cold.stdout and (tmp_path / "run" / "model" / "model.safetensors").is_file()
    lock = tmp_path / "run" / ".zoo.lock"
    assert not lock.exists() or lock.read_text().strip() != str(os.getpid())  # the run's own process held it


def test_an_environment_torch_changed_itself_still_starts_warm(monkeypatch):
    """torch sets TORCHINDUCTOR_CACHE_DIR once a test compiles, sklearn KMP_DUPLICATE_LIB_OK when
    it imports: the tests after them stay warm."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("KMP_DUPLICATE_LIB_OK", "True")
    proc = warm.Process(["--version"], stdout=subprocess.PIPE, text=True)
    assert proc.warm, proc.why_cold
    assert proc.communicate(timeout=60)[0].startswith("zoo ")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # read while torch loads: a cold process
    assert not warm.Process(["--version"], stdout=subprocess.DEVNULL).warm


def test_a_warm_process_takes_signals_and_reports_them(tmp_path, corpus):
    endless = {**TRAINER, "max_steps": 10**6, "log_every": 1}
    args = ["train", "--model", json.dumps(MODEL), "--trainer", json.dumps(endless), "--data", str(corpus)]
    proc = warm.Process([*args, "--out", "run", "--device", "cpu"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.warm, proc.why_cold
        assert proc.pid != os.getpid() and proc.poll() is None
        metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.monotonic() + 60
        while not (metrics.exists() and metrics.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # an endless run: never left behind
    assert proc.returncode == 130 and err.startswith("zoo: stopped at step "), err
    killed = warm.Process([*args, "--out", "run2", "--device", "cpu"], cwd=tmp_path, stderr=subprocess.DEVNULL)
    killed.kill()
    assert killed.wait(timeout=60) == -signal.SIGKILL
