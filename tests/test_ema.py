"""The callback contract an EMA is written against: the run's model and optimizer, tensor state
saved as safetensors in the checkpoint, and the end of training choosing what is saved; the EMA
callback zoo ships, resumed exactly."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Literal

import pytest
import torch
from helpers import crash_sampling_at, make_module
from safetensors.torch import load_file

import zoo
from zoo.cli import main
from zoo.trainers.callbacks import EMA
from zoo.trainers.classifier import ClassificationTask

MODEL = {"type": "simplenet", "in_features": 8, "hidden": [32], "num_classes": 3, "dropout": 0.0}
BASE = {"type": "classifier", "batch_size": 16, "eval_every": 10, "checkpoint_every": 10, "progress": False}


def trainer(**ema) -> dict:
    return {**BASE, "max_steps": 30, "lr": 0.05, "callbacks": [{"type": "ema", "decay": 0.8, **ema}]}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def fit(out: Path, spec: dict, resume: bool = False) -> None:
    torch.manual_seed(0)
    zoo.train(spec, out, model=MODEL, resume=resume)


def test_the_average_is_what_the_formula_says():
    model = torch.nn.Linear(1, 1, bias=False)
    run = types.SimpleNamespace(model=model, step=0, added={})
    run.add_model = lambda name, module: run.added.__setitem__(name, module)
    ema = EMA(decay=0.5, every=2, start_step=2, final="raw")
    for step, value in enumerate([9.0, 0.0, 7.0, 2.0, 5.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        run.step = step
        ema.on_step_end(run)
    # steps 2, 4, 6 count: 0, then 0.5 * 0 + 0.5 * 2 = 1, then 0.5 * 1 + 0.5 * 4 = 2.5
    assert ema.updates == 3 and ema.shadow["weight"].item() == 2.5
    ema.on_train_end(run)
    assert model.weight.item() == 4.0 and run.added["model-ema"].weight.item() == 2.5


def test_ema_becomes_the_model_and_resumes_exactly(tmp_path, monkeypatch):
    fit(tmp_path / "a", trainer())
    ema, raw = weights(tmp_path / "a" / "model"), weights(tmp_path / "a" / "model-raw")
    assert not all(torch.equal(ema[k], raw[k]) for k in ema)  # the average is not the last weights
    assert zoo.load(tmp_path / "a" / "model-raw") is not None  # both are artifacts

    ckpt = tmp_path / "a" / "checkpoints" / "step-00000030"
    state = json.loads((ckpt / "state.json").read_text())["extra"]["callbacks"][0]["state"]
    stored = load_file(ckpt / "callbacks.safetensors")  # the average as safetensors, not JSON
    key = state["shadow"]["head.weight"]["$tensor"]
    assert torch.equal(stored[key], ema["head.weight"]) and state["updates"] == 30

    crash_sampling_at(monkeypatch, ClassificationTask, 25)  # killed after the checkpoint at 20
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "b", trainer())
    monkeypatch.undo()
    fit(tmp_path / "b", trainer(), resume=True)
    for name in ("model", "model-raw"):
        again = weights(tmp_path / "b" / name)
        assert all(torch.equal(again[k], v) for k, v in weights(tmp_path / "a" / name).items()), name


def test_final_raw_keeps_the_trained_weights_and_adds_the_average(tmp_path):
    fit(tmp_path / "a", trainer())
    fit(tmp_path / "b", trainer(final="raw"))
    for mine, theirs in (("model", "model-raw"), ("model-ema", "model")):
        a, b = weights(tmp_path / "b" / mine), weights(tmp_path / "a" / theirs)
        assert all(torch.equal(a[k], b[k]) for k in a), mine


def test_a_callback_reaches_the_model_and_optimizer(tmp_path, make_config):
    seen: list[tuple[int, float, int]] = []

    class Probe(zoo.Callback):
        def on_step_end(self, run):
            seen.append((run.step, run.optimizer.param_groups[0]["lr"], sum(p.numel() for p in run.model.parameters())))

    class ProbeSpec(zoo.CallbackSpec):
        type: Literal["probe"] = "probe"

        def build(self):
            return Probe()

    plugin = make_module("probe_plugin", zoo_register_callbacks=zoo.hookimpl(lambda register: register(ProbeSpec)))
    config = make_config({}, plugin)
    torch.manual_seed(0)
    spec = {**BASE, "max_steps": 3, "lr": 0.05, "callbacks": ["probe"]}
    zoo.train(spec, tmp_path / "r", model=MODEL, config=config)
    params = sum(p.numel() for p in zoo.build_model(MODEL).parameters())
    assert [s for s, _, _ in seen] == [1, 2, 3] and all(n == params for _, _, n in seen)
    assert all(lr > 0 for _, lr, _ in seen)


def test_ema_is_listed(capsys):
    assert main(["list", "callbacks"]) == 0
    assert "ema" in capsys.readouterr().out


def test_with_lora_the_adapter_is_the_one_merged_into_the_model(tmp_path):
    from safetensors.torch import load_file as read

    lm = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 32}
    corpus = tmp_path / "c.txt"
    corpus.write_text("the zoo has models and more models\n" * 40)
    spec = {"type": "causal-lm", "max_steps": 6, "batch_size": 4, "context": 16, "lr": 0.05, "progress": False,
            "lora": {"rank": 2}, "callbacks": [{"type": "ema", "decay": 0.5}]}  # fmt: skip
    torch.manual_seed(0)
    zoo.save(zoo.build_model(lm), tmp_path / "base", tokenizer=zoo.ByteTokenizer())
    zoo.train(spec, tmp_path / "run", init_from=tmp_path / "base", data=corpus, lora=True)
    run = tmp_path / "run"
    merged_from_adapter = zoo.open_model(run / "adapter")  # the base with RUN/adapter merged in
    model = zoo.load(run / "model")
    for name, value in model.state_dict().items():
        assert torch.allclose(merged_from_adapter.state_dict()[name], value, atol=1e-6), name
    assert not all(
        torch.equal(read(run / "model-raw" / "model.safetensors")[k], v) for k, v in model.state_dict().items()
    )
