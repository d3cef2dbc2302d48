"""`--out` and `--force` never destroy what is not a zoo run, and never first; one writer per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import warm

from zoo.cli import main
from zoo.rundir import LOCK_FILE, RunLock

MODEL = json.dumps({"type": "simplenet", "in_features": 4, "hidden": [8], "num_classes": 2})
TRAINER = {"type": "classifier", "max_steps": 6, "batch_size": 8, "eval_every": 3, "checkpoint_every": 3}
TRAINER["progress"] = False


def train(out: str | Path, *extra: str, trainer: dict | None = None) -> int:
    return main(["train", "--model", MODEL, "--trainer", json.dumps(trainer or TRAINER), "--out", str(out), *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def csv_data(cwd) -> Path:
    path = cwd / "data" / "table.csv"
    path.parent.mkdir()
    path.write_text("a,b,c,d,label\n" + "".join(f"{i},{i % 3},{i % 5},{i % 7},{i % 2}\n" for i in range(40)))
    return path


def test_working_directory_ancestors_and_home_are_refused(cwd, capsys, monkeypatch):
    (cwd / "keep.txt").write_text("precious")
    for out in (".", "", "..", "/", str(cwd.parent.parent)):
        assert train(out, "--force") == 2
        assert "give a new folder for the run" in capsys.readouterr().err
    monkeypatch.setenv("HOME", str(cwd / "home"))
    (cwd / "home").mkdir()
    assert train(cwd / "home", "--force") == 2
    assert "home folder" in capsys.readouterr().err
    assert (cwd / "keep.txt").read_text() == "precious"


def test_a_folder_holding_the_data_or_the_registry_is_refused(cwd, csv_data, capsys):
    before = snapshot(cwd)
    assert train(csv_data.parent, "--data", str(csv_data), "--force") == 2
    assert "holds --data" in capsys.readouterr().err
    (cwd / "conf").mkdir()
    registry = cwd / "conf" / "registry.toml"
    registry.write_text("[runtime]\nseed = 1\n")
    assert train(cwd / "conf", "--registry", str(registry), "--force") == 2
    assert "holds --registry" in capsys.readouterr().err
    assert {**before, "conf/registry.toml": registry.read_bytes()} == snapshot(cwd)


def test_a_folder_that_is_not_a_zoo_run_is_never_written_or_deleted(cwd, capsys):
    other = cwd / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8 not really")
    before = snapshot(other)
    for extra in ((), ("--force",), ("--resume",)):
        assert train(other, *extra) == 2
        assert "not a zoo run" in capsys.readouterr().err
    assert snapshot(other) == before


def test_a_typo_in_data_with_force_keeps_the_previous_run(cwd, capsys):
    assert train("runs/a") == 0
    before = snapshot(cwd / "runs" / "a")
    assert train("runs/a", "--force", "--data", "no_such_file.csv") == 2
    assert "no_such_file.csv" in capsys.readouterr().err
    assert snapshot(cwd / "runs" / "a") == before


def test_force_puts_the_old_run_back_when_the_new_one_fails_before_its_first_checkpoint(cwd, capsys):
    assert train("runs/a") == 0
    before = snapshot(cwd / "runs" / "a")
    nan = {**TRAINER, "lr": 1e30, "grad_clip": None, "optimizer": {"name": "sgd"}}
    assert train("runs/a", "--force", trainer=nan) == 1  # fails while running: exit 1
    assert "non-finite" in capsys.readouterr().err
    assert snapshot(cwd / "runs" / "a") == before
    assert not [p for p in (cwd / "runs").iterdir() if p.name.startswith(".")]


def test_force_replaces_a_run_once_the_new_one_has_a_checkpoint(cwd):
    assert train("runs/a") == 0
    old = json.loads((cwd / "runs/a/run.json").read_text())
    assert train("runs/a", "--force", trainer={**TRAINER, "max_steps": 9}) == 0
    new = json.loads((cwd / "runs/a/run.json").read_text())
    assert old["trainer"]["max_steps"] == 6 and new["trainer"]["max_steps"] == 9
    assert sorted(p.name for p in (cwd / "runs").iterdir()) == ["a"]  # nothing left aside


def test_a_second_writer_is_refused_naming_the_first(cwd, capsys):
    assert train("runs/a") == 0
    holder = RunLock(cwd / "runs" / "a")
    holder.acquire()
    try:
        assert train("runs/a", "--resume") == 2
        err = capsys.readouterr().err
        assert f"in use by another zoo process (PID {os.getpid()})" in err
    finally:
        holder.release()
    assert train("runs/a", "--resume") == 0


def test_a_stale_lock_from_a_dead_process_is_taken_over(cwd):
    assert train("runs/a") == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (cwd / "runs" / "a" / LOCK_FILE).write_text(dead.stdout)
    assert train("runs/a", "--resume") == 0
    assert (cwd / "runs" / "a" / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_two_processes_resuming_one_run_one_is_refused(cwd):
    """Real processes: while one `zoo train --resume` runs, a second one on the same run is refused."""
    slow = {**TRAINER, "max_steps": 4000, "eval_every": 0, "checkpoint_every": 0}
    assert train("runs/a", trainer={**slow, "max_steps": 1}) == 0
    cmd = ["train", "--model", MODEL, "--trainer", json.dumps(slow), "--out", "runs/a"]
    first = warm.Process([*cmd, "--resume"], stderr=subprocess.PIPE, text=True)
    try:
        lock = cwd / "runs" / "a" / LOCK_FILE
        import time

        deadline = time.monotonic() + 60
        while lock.read_text().strip() != str(first.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = warm.run([*cmd, "--resume"], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()
