"""One path, four model families: train -> save -> load -> use, changing only the model name."""

from __future__ import annotations

import json
import math

import pytest
import torch

import zoo
from zoo.lm.generation import generate
from zoo.training import train_from_config

TRAINER_FOR = {  # the trainer follows the model's protocol
    "classifier": {"type": "classifier", "max_steps": 30, "batch_size": 32, "progress": False, "eval_every": 15},
    "causal-lm": {
        "type": "causal-lm",
        "max_steps": 30,
        "batch_size": 8,
        "context": 32,
        "lr": 3e-3,
        "log_every": 1,
        "eval_every": 15,
        "eval_batches": 2,
        "progress": False,
    },
}


@pytest.mark.parametrize("name", ["simplenet-small", "minigpt-tiny", "hf-gpt2-tiny", "hf-llama-tiny"])
def test_train_save_load_use(name, config, tmp_path):
    spec = config.spec("models", name)
    result = train_from_config(config, name, TRAINER_FOR[spec.protocol], tmp_path / "run")
    assert result.steps == TRAINER_FOR[spec.protocol]["max_steps"]
    model = zoo.load(result.artifact, config=config)
    assert model.zoo_spec == spec.artifact_spec(model)
    if spec.protocol == "classifier":
        x = torch.randn(8, spec.in_features)
        assert model(x).argmax(-1).shape == (8,)
        assert result.metrics["val_accuracy"] > 0.4
    else:
        out = generate(model, model.zoo_tokenizer, ["Hello", "zoo"], "creative", max_new_tokens=8, config=config)
        assert [len(i) for i in out.ids] == [8, 8]
        # it learned: clearly below a uniform guess over the vocabulary and below its step-0 loss
        rows = [json.loads(x) for x in (result.out / "metrics.jsonl").read_text().splitlines()]
        step0 = next(r["loss"] for r in rows if r["split"] == "train")  # step 1: the untrained model's loss
        final = result.metrics["val_loss"]
        assert final < math.log(model.vocab_size) - 1.0, (final, step0)
        assert final < step0 - 1.0, (final, step0)
