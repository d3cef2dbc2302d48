"""`--quantize int8` / `zoo.quantize`: int8 linear layers for CPU inference (generate, chat, eval),
refused for training and saving, with one message for what cannot work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
import zoo.runtime
from zoo.cli import main
from zoo.quantization import is_quantized, weight_bytes
from zoo.trainers.specs import ClassifierTrainerSpec

# Llama-shaped: rotary positions, SwiGLU, RMSNorm, grouped-query attention, a tied head
LM = {
    "type": "minigpt",
    "vocab_size": 256,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 4,
    "n_kv_heads": 2,
    "max_seq_len": 64,
    "positions": "rope",
    "mlp": "swiglu",
    "norm": "rmsnorm",
    "bias": False,
}
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))


@pytest.fixture
def lm(config) -> nn.Module:
    torch.manual_seed(0)
    return zoo.build_model(LM, config=config).eval()


@pytest.fixture
def artifact(lm, tmp_path, config) -> Path:
    return zoo.save(lm, tmp_path / "lm", config=config)


@pytest.fixture
def quantized(monkeypatch) -> list[nn.Module]:
    """Every model the runtime quantizes, as it comes back (so a test sees the flag took effect)."""
    seen: list[nn.Module] = []
    real = zoo.runtime.quantize_model

    def spy(model: nn.Module, method: str = "int8") -> nn.Module:
        seen.append(real(model, method))
        return seen[-1]

    monkeypatch.setattr(zoo.runtime, "quantize_model", spy)
    return seen


def greedy(model: nn.Module, n: int = 8) -> list[int]:
    return zoo.generate(model, zoo.ByteTokenizer(), ["The quick"], "greedy", max_new_tokens=n).ids[0]


def test_every_linear_layer_gets_int8_weights_and_the_logits_stay_close(lm):
    fp32 = copy.deepcopy(lm)
    assert zoo.quantize(lm) is lm
    assert not any(type(m) is nn.Linear for m in lm.modules()) and is_quantized(lm)
    assert isinstance(lm.get_submodule("head"), torch.ao.nn.quantized.dynamic.Linear)  # the tied head too
    assert weight_bytes(lm) < 0.5 * weight_bytes(fp32)
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = fp32(x)[0], lm(x)[0]
    assert not torch.equal(want, got)  # int8 arithmetic, not the fp32 weights
    assert float((got - want).abs().max() / want.std()) < 0.1
    assert greedy(lm) == greedy(fp32)
    assert zoo.quantize(lm) is lm and is_quantized(lm)  # twice is once


def test_python_generate_quantizes_a_model_it_opens(artifact, quantized):
    fp32 = zoo.generate(artifact, None, "The quick", "greedy", max_new_tokens=8)
    assert quantized == []
    int8 = zoo.generate(artifact, None, "The quick", "greedy", max_new_tokens=8, quantize="int8")
    assert len(quantized) == 1 and is_quantized(quantized[0])
    assert int8.ids == fp32.ids


def test_cli_generate_with_quantize_int8(artifact, quantized, capsys):
    args = ["generate", str(artifact), "--prompt", "The quick", "--sampler", "greedy", "--max-new-tokens", "8"]
    assert main([*args, "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)["ids"]
    assert main([*args, "--json", "--quantize", "int8"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == fp32
    assert len(quantized) == 1 and is_quantized(quantized[0])


def test_eval_shows_fp32_and_int8_side_by_side(artifact, tmp_path, capsys):
    (tmp_path / "text.txt").write_text(TEXT)
    base = ["eval", str(artifact), "--data", str(tmp_path / "text.txt"), "--device", "cpu", "--quantize", "int8"]
    assert main([*base, "--json"]) == 0
    fp32, int8 = json.loads(capsys.readouterr().out)
    assert (fp32["quantize"], int8["quantize"]) == ("none", "int8") and int8["model"] == f"{artifact} (int8)"
    assert int8["metrics"]["weights_mb"] < 0.5 * fp32["metrics"]["weights_mb"]
    bpb = fp32["metrics"]["bits_per_byte"], int8["metrics"]["bits_per_byte"]
    assert bpb[0] != bpb[1] and abs(bpb[1] / bpb[0] - 1) < 0.02
    assert main(base) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert "weights MB" in header and "bits/byte" in header
    assert [r.split()[0] for r in rows] == [str(artifact)] * 2 and "(int8)" in rows[1]


def test_a_quantized_model_is_not_trained_or_saved(lm, tmp_path, config):
    zoo.quantize(lm)
    with pytest.raises(zoo.ZooError, match="saving needs the fp32 model"):
        zoo.save(lm, tmp_path / "q", config=config)
    net = zoo.quantize(zoo.build_model({"type": "simplenet", "in_features": 4, "num_classes": 2}, config=config))
    trainer = ClassifierTrainerSpec(max_steps=2, progress=False).build()
    with pytest.raises(zoo.ZooError, match="training needs the fp32 model"):
        trainer.fit(net, zoo.Runtime(device="cpu"), tmp_path / "run")
    assert not (tmp_path / "run").exists() and not (tmp_path / "q").exists()


def test_what_cannot_be_quantized_is_one_message(lm, artifact, capsys):
    with pytest.raises(zoo.ZooError, match=r"no nn\.Linear layers"):
        zoo.quantize(nn.Sequential(nn.Embedding(4, 4)))
    with pytest.raises(zoo.ZooError, match="runs on the CPU"):
        zoo.quantize(copy.deepcopy(lm).to("meta"))  # a GPU's weights: the same check
    gpu = zoo.Runtime(device="cpu")
    gpu.device = torch.device("cuda")  # what a GPU machine's runtime says (checked before anything moves)
    with pytest.raises(zoo.ZooError, match="runs on the CPU in fp32"):
        gpu.prepare_for_inference(lm, "int8")
    with pytest.raises(zoo.ZooError, match="choose one of none, int8"):
        zoo.quantize(lm, "int4")
    with pytest.raises(zoo.ZooError, match="zoo never changes the model it is handed"):
        zoo.generate(lm, zoo.ByteTokenizer(), "x", max_new_tokens=2, quantize="int8")
    assert not is_quantized(lm)
    args = ["generate", str(artifact), "--prompt", "x", "--max-new-tokens", "2", "--quantize", "int8"]
    assert main([*args, "--precision", "bf16-mixed"]) == 2
    assert "runs on the CPU in fp32" in capsys.readouterr().err
    assert main([*args, "--compile"]) == 2
    assert "--compile does not run int8 layers" in capsys.readouterr().err
    assert main([*args, "--static"]) == 0  # MiniGPT's static decode step runs int8 layers eagerly
    with pytest.raises(SystemExit) as exit_:
        main(["generate", str(artifact), "--prompt", "x", "--quantize", "int4"])
    assert exit_.value.code == 2
