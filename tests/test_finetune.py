"""`zoo train --init-from`: training starts from trained weights, with their tokenizer and lineage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.lm.text_data import TokenData
from zoo.lm.trainer import CausalLMTask, lm_loss

MODEL = {"type": "minigpt", "vocab_size": 320, "d_model": 48, "n_layers": 2, "n_heads": 4, "max_seq_len": 64}
PARENT = {
    "type": "causal-lm",
    "max_steps": 60,
    "batch_size": 8,
    "context": 32,
    "lr": 3e-3,
    "eval_every": 0,
    "progress": False,
    "tokenizer": {"type": "bpe", "vocab_size": 300},
}
CHILD = {"type": "causal-lm", "max_steps": 4, "batch_size": 8, "context": 32, "log_every": 1, "progress": False}


def train(*args: str) -> int:
    return main(["train", "--device", "cpu", *args])


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"{i}: the five boxing wizards jump quickly.\n" for i in range(400)))
    run = root / "parent"
    assert (
        train("--model", json.dumps(MODEL), "--trainer", json.dumps(PARENT), "--data", str(corpus), "--out", str(run))
        == 0
    )
    return {"run": run, "corpus": corpus, "root": root}


def first_logged_loss(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r["split"] == "train" and r["step"] == 1)


def parent_loss_on_first_batch(parent_run: Path, child: Path) -> float:
    """The parent's loss on exactly the batch the child trains on first (same seed, same data)."""
    model = zoo.load(parent_run / "model")
    tokens = np.memmap(child / "data" / "tokens.bin", dtype=np.uint16, mode="r")
    task = CausalLMTask(TokenData(tokens, 0.1), CHILD["context"])
    x, y = task.sample(torch.Generator().manual_seed(0), CHILD["batch_size"])
    with torch.no_grad():
        return float(lm_loss(model(x)[0], y))


@pytest.mark.parametrize("source", ["run", "artifact"])
def test_a_fine_tune_starts_from_the_parents_weights(parent, tmp_path, source):
    path = parent["run"] if source == "run" else parent["run"] / "model"
    child = tmp_path / "child"
    assert (
        train(
            "--init-from",
            str(path),
            "--trainer",
            json.dumps(CHILD),
            "--data",
            str(parent["corpus"]),
            "--out",
            str(child),
        )
        == 0
    )
    first = first_logged_loss(child)
    assert first == pytest.approx(parent_loss_on_first_batch(parent["run"], child), rel=1e-5)
    assert first < np.log(MODEL["vocab_size"]) - 1.5  # not a random-init loss
    # the tokenizer came along (no new BPE was trained), and the lineage is recorded
    parent_tok = (parent["run"] / "model" / "tokenizer.json").read_text()
    assert (child / "model" / "tokenizer.json").read_text() == parent_tok
    assert not (child / "data" / "tokenizer.json").exists()
    manifest = json.loads((child / "model" / "manifest.json").read_text())
    parent_manifest = json.loads((parent["run"] / "model" / "manifest.json").read_text())
    assert manifest["parent"] == {
        "path": str((parent["run"] / "model").resolve()),
        "sha256": parent_manifest["weights_sha256"],
    }
    assert json.loads((child / "run.json").read_text())["init_from"] == manifest["parent"]


def test_init_from_with_model_needs_matching_tensors(parent, tmp_path, capsys):
    other = json.dumps({**MODEL, "d_model": 64})
    code = train(
        "--init-from",
        str(parent["run"]),
        "--model",
        other,
        "--trainer",
        json.dumps(CHILD),
        "--out",
        str(tmp_path / "c"),
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "tensors do not match the spec" in err and "tok_emb.weight (file (320, 48), model (320, 64))" in err
    assert not (tmp_path / "c").exists()
    same = json.dumps({**MODEL, "dropout": 0.1})  # same tensors, another spec: allowed
    assert (
        train(
            "--init-from",
            str(parent["run"]),
            "--model",
            same,
            "--trainer",
            json.dumps(CHILD),
            "--out",
            str(tmp_path / "d"),
        )
        == 0
    )
    assert json.loads((tmp_path / "d" / "run.json").read_text())["model"]["dropout"] == 0.1


def test_resume_of_a_fine_tune_is_well_defined(parent, tmp_path, capsys):
    child = tmp_path / "child"
    args = ["--trainer", json.dumps(CHILD), "--data", str(parent["corpus"]), "--out", str(child)]
    assert train("--init-from", str(parent["run"]), *args) == 0
    expected = first_logged_loss(child)
    # killed before its first checkpoint: --resume alone starts again from the recorded parent
    shutil.rmtree(child / "checkpoints")
    shutil.rmtree(child / "model")
    (child / "metrics.jsonl").unlink()
    assert train("--resume", *args) == 0
    assert first_logged_loss(child) == pytest.approx(expected, rel=1e-6)
    # the same parent again is fine; another one is refused, and so is one for a run that had none
    assert train("--resume", "--init-from", str(parent["run"] / "model"), *args) == 0
    assert train("--resume", "--init-from", str(child), *args) == 2
    assert "was started with --init-from" in capsys.readouterr().err
    scratch = tmp_path / "scratch"
    assert train("--model", json.dumps(MODEL), "--trainer", json.dumps(CHILD), "--out", str(scratch)) == 0
    assert (
        train("--resume", "--init-from", str(parent["run"]), "--trainer", json.dumps(CHILD), "--out", str(scratch)) == 2
    )
    assert "was not started with --init-from" in capsys.readouterr().err


def test_init_from_errors_are_clear(tmp_path, capsys):
    assert train("--init-from", str(tmp_path / "nope"), "--trainer", "lm-tiny", "--out", str(tmp_path / "c")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert train("--init-from", str(tmp_path / "empty"), "--trainer", "lm-tiny", "--out", str(tmp_path / "c")) == 2
    assert "not a zoo artifact" in capsys.readouterr().err
    assert train("--trainer", "lm-tiny", "--out", str(tmp_path / "c")) == 2
    assert "--init-from" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_init_from_in_python(parent, tmp_path):
    result = zoo.train("lm-tiny", tmp_path / "py", init_from=parent["run"], data=parent["corpus"])
    assert result.steps == 20
    assert zoo.load(result.artifact).zoo_spec == zoo.load(parent["run"] / "model").zoo_spec
