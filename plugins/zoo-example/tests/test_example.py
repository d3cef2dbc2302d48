"""zoo-example as a user meets it: found by the registry, trained and sampled through the CLI,
and gone without a trace once uninstalled."""

from __future__ import annotations

import importlib.metadata as metadata
import json
from pathlib import Path

import pytest

import zoo
from zoo.cli import main
from zoo.registry import Registry

EXAMPLE_TOML = Path(__file__).resolve().parents[1] / "example.toml"
OURS = {
    ("models", "gru-lm"),
    ("models", "small-cnn"),
    ("samplers", "typical-p"),
    ("trainers", "smooth-classifier"),
    ("optimizers", "signum"),
}


def entries(registry):
    return {
        (kind, t): (e.distribution, e.version)
        for kind in ("models", "samplers", "trainers", "optimizers")
        for t, e in registry.types(kind).items()
    }


def test_registry_finds_all_three_with_provenance():
    found = entries(Registry(env={}))
    for key in OURS:
        assert found[key] == ("zoo-example", metadata.version("zoo-example"))


def test_uninstalling_removes_exactly_its_entries(monkeypatch):
    before = entries(Registry(env={}))
    real = metadata.entry_points

    def without_example(group):  # what discovery sees once the distribution is uninstalled
        return [ep for ep in real(group=group) if ep.dist is None or ep.dist.name != "zoo-example"]

    monkeypatch.setattr(metadata, "entry_points", without_example)
    after = entries(Registry(env={}))
    assert set(before) - set(after) == OURS
    assert {k: v for k, v in before.items() if k not in OURS} == after


def test_train_and_generate_with_its_model_and_sampler(tmp_path, capsys):
    reg = ["--registry", str(EXAMPLE_TOML)]
    assert main(["train", *reg, "--model", "gru-lm-small", "--trainer", "lm-short", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                *reg,
                str(tmp_path / "r"),
                "--prompt",
                "The",
                "--sampler",
                "typical",
                "--max-new-tokens",
                "12",
                "--json",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows[0]["ids"]) == 12


def test_its_trainer_trains_a_zoo_model_with_its_optimizer(tmp_path, capsys):
    reg = ["--registry", str(EXAMPLE_TOML)]
    assert main(["train", *reg, "--model", "mlp", "--trainer", "smooth", "--out", str(tmp_path / "c")]) == 0
    assert "val_accuracy" in capsys.readouterr().out
    state = json.loads((tmp_path / "c" / "checkpoints" / "step-00000150" / "state.json").read_text())
    assert {g["momentum"] for g in state["optimizer"]["param_groups"]} == {0.8}  # signum's, as example.toml sets it


def test_inline_json_specs_on_the_command_line(tmp_path, capsys):
    model = '{"type": "gru-lm", "d_model": 32, "max_seq_len": 64}'
    trainer = '{"type": "causal-lm", "max_steps": 3, "batch_size": 2, "context": 16, "progress": false}'
    assert main(["train", "--model", model, "--trainer", trainer, "--out", str(tmp_path / "j")]) == 0
    assert main(["train", "--model", "{bad json", "--trainer", trainer, "--out", str(tmp_path / "k")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("mass", [0.2, 0.9])
def test_typical_sampler_keeps_the_typical_set(mass):
    import torch
    from zoo_example.sampling import Typical

    logits = torch.tensor([[5.0, 4.0, 0.0, -5.0]])
    picks = {int(Typical(mass, 1.0).select(logits, None, torch.Generator().manual_seed(s))) for s in range(200)}
    assert picks <= {0, 1, 2} and 3 not in picks


def test_a_recurrent_model_decodes_past_its_training_window_a_transformer_does_not():
    gru = zoo.build_model({"type": "gru-lm", "max_seq_len": 8, "d_model": 16})
    assert isinstance(gru, zoo.DecodingLimit) and gru.decode_limit is None
    out = zoo.generate(gru, None, [[1, 2, 3]], "greedy", max_new_tokens=20)
    assert len(out.ids[0]) == 20  # 23 tokens through a model trained on windows of 8
    minigpt = zoo.build_model({"type": "minigpt", "max_seq_len": 8, "d_model": 16, "n_layers": 1, "n_heads": 2})
    with pytest.raises(zoo.ZooError, match="exceeds the model's context of 8 tokens"):
        zoo.generate(minigpt, None, [[1, 2, 3]], "greedy", max_new_tokens=20)
