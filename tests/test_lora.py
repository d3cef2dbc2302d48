"""LoRA fine-tuning: only the adapters train and are checkpointed, the saved model has them merged
(a low-rank change of the targeted layers, nothing else), resume is exact, MiniGPT and HF alike."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import crash_sampling_at
from safetensors import safe_open

import zoo
from zoo.cli import main
from zoo.lm.trainer import CausalLMTask
from zoo.trainers.lora import LoRALinear, add_adapters, apply_lora, merged
from zoo.trainers.specs import LoraSpec

TRAINER = {
    "type": "causal-lm",
    "max_steps": 8,
    "batch_size": 4,
    "context": 32,
    "eval_every": 4,
    "eval_batches": 1,
    "checkpoint_every": 4,
    "lr": 0.01,
    "progress": False,
}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    corpus = root / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 300)
    zoo.train({**TRAINER, "max_steps": 4}, root / "parent", model="minigpt-tiny", data=corpus)
    return root, corpus


def keys(path):
    with safe_open(str(path), "pt") as fh:
        return set(fh.keys())


def test_only_the_adapters_train_and_are_checkpointed(parent, tmp_path):
    root, corpus = parent
    zoo.train(TRAINER, tmp_path / "ft", init_from=root / "parent", data=corpus, lora=True)
    checkpoint = sorted((tmp_path / "ft" / "checkpoints").iterdir())[-1] / "model.safetensors"
    saved = keys(checkpoint)
    assert saved and all(k.endswith((".lora_a", ".lora_b")) for k in saved)
    # the adapter file: the same tensors under peft's names (base_model.model.PATH.lora_A.weight)
    peft_names = {f"base_model.model.{k.rsplit('.', 1)[0]}.lora_{k[-1].upper()}.weight" for k in saved}
    assert keys(tmp_path / "ft" / "adapter" / "adapter_model.safetensors") == peft_names
    before, after = zoo.load(root / "parent" / "model"), zoo.load(tmp_path / "ft" / "model")
    b, a = before.state_dict(), after.state_dict()
    assert set(a) == set(b)  # merged: the plain model's names, loadable anywhere
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(".attn." in k or ".mlp." in k for k in changed)  # the default targets only
    for name in changed:
        if a[name].dim() == 2:  # each update is low rank
            assert torch.linalg.matrix_rank(a[name] - b[name]) <= LoraSpec().rank


def test_a_resumed_lora_run_equals_an_uninterrupted_one(parent, tmp_path, monkeypatch):
    root, corpus = parent
    straight = zoo.train(TRAINER, tmp_path / "a", init_from=root / "parent", data=corpus, lora=True)
    restore = crash_sampling_at(monkeypatch, CausalLMTask, 6)
    with pytest.raises(KeyboardInterrupt):
        zoo.train(TRAINER, tmp_path / "b", init_from=root / "parent", data=corpus, lora=True)
    restore()
    resumed = zoo.train(TRAINER, tmp_path / "b", data=corpus, lora=True, resume=True)
    assert resumed.metrics["val_loss"] == straight.metrics["val_loss"]
    a, b = zoo.load(tmp_path / "a" / "model").state_dict(), zoo.load(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_hf_models_take_adapters_through_peft(tmp_path, capsys):
    """GPT-2's Conv1D layers get peft's LoRA; merged, the model computes what it did with them."""
    pytest.importorskip("peft")
    model = zoo.build_model("hf-gpt2-tiny").eval()
    targets = add_adapters(model, LoraSpec(rank=2, targets=["*.attn.c_attn"]))
    assert targets == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "c_attn" in n for n in trainable)
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a non-zero update
        want = model(ids)[0]
        plain = merged(model)
        torch.testing.assert_close(plain(ids)[0], want, atol=1e-5, rtol=0)
    assert type(plain.hf).__name__ == "GPT2LMHeadModel" and set(plain.state_dict()) == set(
        zoo.build_model("hf-gpt2-tiny").state_dict()
    )
    # through the command line: --lora settings from the trainer spec; the run saves adapters and a plain model
    zoo.save(zoo.build_model("hf-gpt2-tiny"), tmp_path / "base")
    (tmp_path / "c.txt").write_text("hello zoo " * 400)
    spec = {**TRAINER, "max_steps": 2, "lora": {"rank": 2, "targets": ["*.attn.c_attn"]}}
    args = [
        "train",
        "--init-from",
        str(tmp_path / "base"),
        "--trainer",
        json.dumps(spec),
        "--data",
        str(tmp_path / "c.txt"),
    ]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    saved = keys(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert saved and all("c_attn" in k and "lora_" in k for k in saved)
    checkpointed = keys(sorted((tmp_path / "run" / "checkpoints").iterdir())[-1] / "model.safetensors")
    assert {k.replace(".default", "") for k in checkpointed} == saved  # peft drops the adapter's name
    zoo.load(tmp_path / "run" / "model")
    capsys.readouterr()


def test_zoo_wrapper_merges_exactly():
    model = zoo.build_model("minigpt-tiny").eval()
    apply_lora(model, LoraSpec(rank=2))
    layer = model.get_submodule("blocks.0.attn.qkv")
    assert isinstance(layer, LoRALinear)
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        layer.lora_b.normal_()
        want = model(ids)[0]
        torch.testing.assert_close(merged(model)(ids)[0], want, atol=1e-5, rtol=0)


def test_targets_that_match_nothing_list_the_layers():
    with pytest.raises(
        zoo.SpecError, match=r"lora\.targets: \['\*nothing\*'\] match no linear layer.*blocks\.0\.attn\.qkv"
    ):
        apply_lora(zoo.build_model("minigpt-tiny"), LoraSpec(targets=["*nothing*"]))


def test_the_update_is_scaled_by_alpha_over_rank():
    """LoRA's update is B @ A times alpha / rank (peft's scaling): with alpha 16 and rank 4 the
    update counts four times, computed by hand here, merged or not."""
    model = zoo.build_model("minigpt-tiny").eval()
    apply_lora(model, LoraSpec(rank=4, alpha=16.0))
    layer = model.get_submodule("blocks.0.attn.qkv")
    x = torch.randn(3, layer.base.in_features)
    with torch.no_grad():
        layer.lora_b.normal_()
        want = layer.base(x) + x @ layer.lora_a.t() @ layer.lora_b.t() * 4.0
        torch.testing.assert_close(layer(x), want)
        torch.testing.assert_close(layer.merged()(x), want, atol=1e-5, rtol=0)
