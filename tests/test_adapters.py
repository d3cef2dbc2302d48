"""LoRA adapters in peft's layout on zoo's own wrapper (MiniGPT): what a run writes, what
`zoo.open_model` / `--init-from` read back, and every adapter folder zoo refuses, one message each.
(The round trips with peft itself, on Hugging Face models, are zoo-hf's tests/test_peft_adapters.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.adapters import write_adapter
from zoo.cli import main
from zoo.trainers.lora import apply_lora
from zoo.trainers.specs import LoraSpec

TINY = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32}
SPEC = LoraSpec(rank=2, alpha=6.0, targets=["*.attn.qkv", "*.mlp.*"])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A saved base and an adapter on it with non-zero updates, written as a LoRA run writes it."""
    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    zoo.save(zoo.build_model(TINY), root / "base")
    model = zoo.load(root / "base").eval()
    apply_lora(model, SPEC)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(std=0.1)
    (root / "adapter").mkdir()
    write_adapter(root / "adapter", model, SPEC, {"path": str((root / "base").resolve()), "sha256": "0" * 64})
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save(model(ids)[0], root / "want.pt")  # the model with its adapters, unmerged
    torch.save(ids, root / "ids.pt")
    return {"root": root, "base": root / "base", "adapter": root / "adapter"}


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids)[0]


def test_the_files_are_peft_s_layout(made):
    config = json.loads((made["adapter"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM" and config["bias"] == "none"
    assert (config["r"], config["lora_alpha"], config["fan_in_fan_out"]) == (2, 6.0, False)
    assert config["base_model_name_or_path"] == str(made["base"].resolve())
    assert "blocks.0.attn.qkv" in config["target_modules"] and "blocks.1.mlp.fc" in config["target_modules"]
    tensors = load_file(made["adapter"] / "adapter_model.safetensors")
    a, b = (tensors[f"base_model.model.blocks.0.attn.qkv.lora_{x}.weight"] for x in "AB")
    assert a.shape == (2, 32) and b.shape == (96, 2)  # A (r, in), B (out, r), as peft's Linear layers hold them
    assert len(tensors) == 2 * len(config["target_modules"])
    assert json.loads((made["adapter"] / "zoo_adapter.json").read_text())["lora"]["rank"] == 2


def test_open_model_merges_an_adapter_onto_its_base(made):
    config = zoo.default_config()
    ids, want = torch.load(made["root"] / "ids.pt"), torch.load(made["root"] / "want.pt")
    opened = zoo.open_model(made["adapter"], config)
    torch.testing.assert_close(logits(opened, ids), want, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(zoo.load(made["base"]), ids), want, atol=1e-3)  # the adapter does something


def test_a_relative_base_is_read_from_the_adapter_folder(made, tmp_path):
    shutil.copytree(made["base"], tmp_path / "base")
    adapter = copy_adapter(made, tmp_path / "nested" / "adapter", base_model_name_or_path="../../base")
    ids, want = torch.load(made["root"] / "ids.pt"), torch.load(made["root"] / "want.pt")
    torch.testing.assert_close(logits(zoo.open_model(adapter, zoo.default_config()), ids), want, atol=1e-5, rtol=0)


def test_a_minigpt_lora_run_trains_resumes_and_generates_from_its_adapter(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    trainer = {"type": "causal-lm", "max_steps": 4, "batch_size": 4, "context": 16, "lr": 0.01, "progress": False}
    zoo.train({**trainer, "max_steps": 2}, tmp_path / "base", model=TINY, data=corpus)
    lora = {**trainer, "checkpoint_every": 2, "lora": {"rank": 2, "targets": ["*.attn.*"]}}
    zoo.train({**lora, "max_steps": 2}, tmp_path / "run", init_from=tmp_path / "base", data=corpus, lora=True)
    zoo.train(lora, tmp_path / "run", data=corpus, lora=True, resume=True)  # to step 4, from the recorded base
    adapter = tmp_path / "run" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "base" / "model").resolve())
    ids = torch.randint(0, 256, (1, 9))
    merged = logits(zoo.load(tmp_path / "run" / "model"), ids)
    torch.testing.assert_close(logits(zoo.open_model(adapter, zoo.default_config()), ids), merged, atol=1e-5, rtol=0)
    capsys.readouterr()
    assert main(["generate", str(adapter), "--prompt", "the", "--max-new-tokens", "3", "--sampler", "greedy"]) == 0
    assert capsys.readouterr().out.startswith("the")
    # and --init-from an adapter folder: a fine-tune starting from the merged weights, the adapter its parent
    child = zoo.train({**trainer, "max_steps": 1}, tmp_path / "child", init_from=adapter, data=corpus)
    manifest = json.loads((child.artifact / "manifest.json").read_text())
    assert manifest["parent"]["path"] == str(adapter.resolve())


def copy_adapter(made, to: Path, **config_changes) -> Path:
    shutil.copytree(made["adapter"], to)
    path = to / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config_changes}))
    return to


def break_weights(folder: Path, change) -> None:
    path = folder / "adapter_model.safetensors"
    tensors = change(load_file(path))
    save_file(tensors, path)


def rename_layer(tensors):
    return {k.replace("blocks.0.attn.qkv", "blocks.0.attn.qkvv"): v for k, v in tensors.items()}


def drop_a_half(tensors):
    return {k: v for k, v in tensors.items() if "blocks.0.attn.qkv.lora_B" not in k}


def add_a_magnitude(tensors):
    return {**tensors, "base_model.model.blocks.0.attn.qkv.lora_magnitude_vector": torch.ones(96)}


@pytest.mark.parametrize(
    ("changes", "weights", "message"),
    [
        ({"base_model_name_or_path": "/nowhere/base"}, None, r"name_or_path '/nowhere/base': no such folder"),
        ({"base_model_name_or_path": "org/name"}, None, r"write 'hf:org/name' there"),
        ({"base_model_name_or_path": None}, None, r"base_model_name_or_path is empty"),
        ({"peft_type": "IA3"}, None, r"peft_type 'IA3' is not LoRA"),
        ({"use_dora": True}, None, r"use_dora = True is a peft option zoo does not apply"),
        ({"bias": "all"}, None, r"bias 'all' trains the base's biases"),
        ({"r": 0}, None, r"adapter_config.json: unexpected content; r: "),
        ({"r": 3}, None, r"blocks.0.attn.qkv: lora_A \[2, 32\] and lora_B \[96, 2\] do not fit .* at r=3"),
        ({"rank_pattern": {"(a+)+": 2}}, None, r"repeats a group"),
        ({}, rename_layer, r"adapts blocks.0.attn.qkvv, which is not a linear layer of the base; did you mean"),
        ({}, drop_a_half, r"blocks.0.attn.qkv has lora_A without its other half"),
        ({}, add_a_magnitude, r"lora_magnitude_vector is not a LoRA weight"),
    ],
)
def test_an_adapter_zoo_cannot_apply_is_one_message(made, tmp_path, changes, weights, message):
    adapter = copy_adapter(made, tmp_path / "adapter", **changes)
    if weights is not None:
        break_weights(adapter, weights)
    with pytest.raises(zoo.ZooError, match=message):
        zoo.open_model(adapter, zoo.default_config())


def test_another_base_is_a_shape_mismatch(made, tmp_path):
    zoo.save(zoo.build_model({**TINY, "d_model": 64}), tmp_path / "wide")
    adapter = copy_adapter(made, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "wide"))
    with pytest.raises(zoo.ZooError, match=r"do not fit the base's layer \(64 in, 192 out\) at r=2; .*another base"):
        zoo.open_model(adapter, zoo.default_config())


def test_pickles_and_bad_json_are_refused_on_the_command_line(made, tmp_path, capsys):
    pickled = copy_adapter(made, tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    broken = copy_adapter(made, tmp_path / "broken")
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    looping = copy_adapter(made, tmp_path / "looping", base_model_name_or_path=".")
    garbled = copy_adapter(made, tmp_path / "garbled")
    (garbled / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    for folder, message in [
        (garbled, "adapter_model.safetensors: not a readable safetensors file"),
        (pickled, "holds adapter_model.bin but no adapter_model.safetensors; zoo never loads pickle files"),
        (broken, "adapter_config.json: not valid JSON"),
        (looping, "leads back to an adapter already opened"),
    ]:
        capsys.readouterr()
        assert main(["generate", str(folder), "--prompt", "x", "--max-new-tokens", "1"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_an_hf_base_is_left_to_open_model_s_resolution(tmp_path):
    """``hf:`` references are handed on unchanged: hub resolution plugs in where `open_model` resolves names."""
    from zoo.finetune import adapter_base

    assert adapter_base("hf:org/name@0123abc", tmp_path) == "hf:org/name@0123abc"
    assert adapter_base(str(tmp_path), tmp_path / "elsewhere") == tmp_path


def test_a_base_that_is_no_model_is_named_with_the_adapter(made, tmp_path):
    (tmp_path / "empty").mkdir()
    adapter = copy_adapter(made, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "empty"))
    with pytest.raises(
        zoo.ZooError, match=r"adapter_config.json: its base '.*empty' cannot be opened: .*not a zoo artifact"
    ):
        zoo.open_model(adapter, zoo.default_config())
