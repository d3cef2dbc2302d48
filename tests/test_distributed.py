"""torch.distributed on CPU (gloo): `zoo train --nproc 2` equals one process with the same global
batch; only rank 0 writes; a DDP run resumes exactly."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.storage import read_tensors

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 64}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 10,
    "batch_size": 12,  # divisible by 2 and 3 (an FSDP run resumes on 3)
    "context": 32,
    "eval_every": 5,
    "eval_batches": 1,
    "log_every": 5,
    "checkpoint_every": 5,
    "progress": False,
    "grad_clip": 1.0,
    "schedule": {"name": "cosine", "warmup_steps": 2},
    "callbacks": [{"type": "best-checkpoint", "metric": "val_loss", "mode": "max"}],  # best: step 5
}


def train(out: Path, corpus: Path, *extra: str, trainer: dict | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "zoo",
        "train",
        "--model",
        json.dumps(MODEL),
        "--trainer",
        json.dumps(trainer or TRAINER),
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--device",
        "cpu",
        *extra,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("c") / "c.txt"
    path.write_text("".join(f"{i}: pack my box with five dozen liquor jugs.\n" for i in range(300)))
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, corpus) -> Path:
    """One process; its own fixture, so a test that needs only this one can run on another worker."""
    out = tmp_path_factory.mktemp("runs") / "single"
    train(out, corpus)
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory, corpus) -> Path:
    """Two processes, FSDP (fully_shard per block) on gloo; tests resume copies of it."""
    out = tmp_path_factory.mktemp("runs") / "fsdp"
    train(out, corpus, "--nproc", "2", "--set", "runtime.distributed=fsdp")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus, single) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs") / "ddp"
    train(out, corpus, "--nproc", "2")
    return {"single": single, "ddp": out}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return read_tensors(run / "model" / "model.safetensors")


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    single, ddp = weights(runs["single"]), weights(runs["ddp"])
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=2e-5, rtol=1e-4)
    # callbacks run on every process: the best checkpoint (a collective save) is the single run's
    for run in runs.values():
        assert json.loads((run / "checkpoints" / "best" / "state.json").read_text())["step"] == 5
    best = {name: read_tensors(run / "checkpoints" / "best" / "model.safetensors") for name, run in runs.items()}
    for k in best["single"]:
        torch.testing.assert_close(best["ddp"][k], best["single"][k], atol=2e-5, rtol=1e-4)


def test_only_rank_zero_writes(runs):
    lines = [json.loads(x) for x in (runs["ddp"] / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["split"]) for x in lines] == [
        (5, "train"),
        (5, "val"),
        (10, "train"),
        (10, "val"),
        (10, "ranks"),
    ]
    assert sorted(p.name for p in (runs["ddp"] / "checkpoints").iterdir()) == ["best", "step-00000005", "step-00000010"]
    single = [json.loads(x) for x in (runs["single"] / "metrics.jsonl").read_text().splitlines()]
    # the logged training loss is the mean over both ranks, i.e. the single process's global-batch loss
    assert lines[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-5)


def test_each_process_trained_on_its_own_slice(runs):
    """Two processes really ran, each on half of every global batch, and together on all of it."""
    ranks = json.loads((runs["ddp"] / "metrics.jsonl").read_text().splitlines()[-1])
    single = json.loads((runs["single"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert ranks["world_size"] == 2 and single["world_size"] == 1
    tokens = TRAINER["max_steps"] * TRAINER["batch_size"] * TRAINER["context"]
    assert ranks["units"] == [tokens // 2, tokens // 2] and single["units"] == [tokens]
    a, b = ranks["input_sum"]
    assert a != b  # different slices of the same batches...
    assert a + b == pytest.approx(single["input_sum"][0])  # ...that add up to the whole


def test_early_stopping_stops_every_process_at_one_step(corpus, tmp_path):
    # min_delta 10: no evaluation after the first improves, so patience 1 stops at the second (step 10)
    stop = {"type": "early-stopping", "patience": 1, "min_delta": 10.0}
    train(tmp_path / "ddp", corpus, "--nproc", "2", trainer={**TRAINER, "max_steps": 40, "callbacks": [stop]})
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    (event,) = [x for x in lines if x["split"] == "event"]
    assert event["step"] == 10 and "has not improved for 1 evaluation " in event["reason"]
    assert lines[-1]["units"] == [10 * TRAINER["batch_size"] * 32 // 2] * 2  # both stopped after step 10


def test_ddp_run_resumes_exactly(runs, corpus, tmp_path):
    out = tmp_path / "ddp"
    shutil.copytree(runs["ddp"], out)
    shutil.rmtree(out / "checkpoints" / "step-00000010")  # as if killed after step 5
    shutil.rmtree(out / "model")
    train(out, corpus, "--nproc", "2", "--resume")
    resumed, straight = weights(out), weights(runs["ddp"])
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_fsdp_two_processes_equal_one(single, fsdp, corpus, tmp_path):
    """FSDP (fully_shard per block) on gloo: same weights as one process, exact resume."""
    one, sharded = weights(single), weights(fsdp)
    for k in one:
        torch.testing.assert_close(sharded[k], one[k], atol=2e-5, rtol=1e-4)
    out = tmp_path / "fsdp"
    shutil.copytree(fsdp, out)
    shutil.rmtree(out / "checkpoints" / "step-00000010")
    shutil.rmtree(out / "model")
    train(out, corpus, "--nproc", "2", "--set", "runtime.distributed=fsdp", "--resume")
    resumed = weights(out)
    assert all(torch.equal(resumed[k], sharded[k]) for k in sharded)


def test_ddp_resume_with_another_model_fails_alike_on_every_rank(runs, corpus, tmp_path):
    """Every rank reads run.json before rank 0 rewrites it, so both refuse the resume cleanly."""
    out = tmp_path / "ddp"
    shutil.copytree(runs["ddp"], out)
    before = (out / "run.json").read_text()
    other = {**MODEL, "d_model": 32}
    cmd = [sys.executable, "-m", "zoo", "train", "--model", json.dumps(other), "--trainer", json.dumps(TRAINER)]
    cmd += ["--data", str(corpus), "--out", str(out), "--device", "cpu", "--nproc", "2", "--resume"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert res.stderr.count("was started with a different model spec") == 2, res.stderr[-3000:]
    assert "JSONDecodeError" not in res.stderr
    assert (out / "run.json").read_text() == before


def test_fsdp_checkpoints_are_written_in_shards_and_reshard_on_resume(fsdp, corpus, tmp_path):
    """Each FSDP rank writes its own shards (safetensors, offsets in the header, no pickle), no rank
    holds the whole model; a run saved by 2 processes resumes on 3 and ends where 2 would have."""
    from safetensors import safe_open

    straight, trainer = fsdp, TRAINER
    fsdp_args = ("--set", "runtime.distributed=fsdp")
    ckpt = straight / "checkpoints" / "step-00000005"
    files = sorted(p.name for p in ckpt.iterdir())
    shards = [f for f in files if f.startswith("shard-")]
    assert len(shards) == 2 and "model.safetensors" not in files and ".metadata" not in files, files
    total = sum(t.numel() for t in weights(straight).values()) - MODEL["vocab_size"] * MODEL["d_model"]  # tied head
    for shard in shards:
        with safe_open(str(ckpt / shard), framework="pt") as f:
            names = [k for k in f.keys() if k.startswith("model/")]  # noqa: SIM118 - a safetensors handle
            held = sum(math.prod(f.get_slice(k).get_shape()) for k in names)
            assert 0 < held < total  # a part of the model, not all of it
            assert "DCP_SHARDING_INFO" in (f.metadata() or {})  # where each piece sits, as JSON
    resumed = tmp_path / "three"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000010")
    shutil.rmtree(resumed / "model")
    res = train(resumed, corpus, "--nproc", "3", *fsdp_args, "--resume", trainer=trainer)
    assert "resuming from" in res.stderr and "(step 5)" in res.stderr
    assert len([p for p in (resumed / "checkpoints" / "step-00000010").iterdir() if p.name.startswith("shard-")]) == 3
    two, three = weights(straight), weights(resumed)
    for k in two:
        torch.testing.assert_close(three[k], two[k], atol=2e-5, rtol=1e-4)

    cmd = [sys.executable, "-m", "zoo", "train", "--model", json.dumps(MODEL), "--trainer", json.dumps(trainer)]
    cmd += ["--data", str(corpus), "--out", str(resumed), "--device", "cpu", "--resume"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # one process, no FSDP
    assert res.returncode != 0 and "sharded (FSDP) checkpoint cannot resume a run without FSDP" in res.stderr
    assert "Traceback" not in res.stderr

    shard = next((resumed / "checkpoints" / "step-00000010").glob("shard-00001-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:3000])  # a damaged shard: named by zoo, no DCP traceback
    cmd += ["--nproc", "2", *fsdp_args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and f"{shard.name}: not a readable safetensors file" in res.stderr, res.stderr[-2000:]
    assert "Global metadata is not found" not in res.stderr


def test_sigterm_stops_every_process_at_one_step_and_the_printed_command_resumes_exactly(runs, corpus, tmp_path):
    """SIGTERM to `zoo train --nproc 2` (what `timeout` and job schedulers send): every process
    stops after the same step with one checkpoint, exit 143, one line; the command it prints
    ends with the weights of an uninterrupted run."""
    import shlex
    import signal
    import time

    out = tmp_path / "stopped"
    trainer = {**TRAINER, "log_every": 1}  # logging does not change the weights; it shows the steps
    cmd = ["--model", json.dumps(MODEL), "--trainer", json.dumps(trainer), "--data", str(corpus)]
    cmd += ["--out", str(out), "--device", "cpu", "--nproc", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "train", *cmd], stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.exists() and '"step": 2, "split": "train"' in metrics.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    stopped = [line for line in err.splitlines() if line.startswith("zoo: stopped at step ")]
    assert len(stopped) == 1, err[-3000:]  # rank 0 says it once
    step = int(stopped[0].split()[4])
    assert 2 <= step < TRAINER["max_steps"]
    events = [json.loads(line) for line in metrics.read_text().splitlines() if '"event": "stopped"' in line]
    assert [e["step"] for e in events] == [step]  # one agreed step
    again = shlex.split(stopped[0].split("continue with: ", 1)[1])
    assert again[:2] == ["zoo", "train"] and again[-1] == "--resume" and "--nproc" in again
    res = subprocess.run([sys.executable, "-m", "zoo", *again[1:]], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed, straight = weights(out), weights(runs["ddp"])
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
