"""`zoo generate` and `zoo.generate` take a local HF folder or a `path=` preset, not only an
artifact; `zoo show --params` reads a `path=` preset's shapes without loading its weights."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import zoo
from zoo.cli import main


@pytest.fixture
def folder(tmp_path):
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "llama")
    return tmp_path / "llama", model


def greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids) :].tolist()


def test_generate_from_a_folder_and_from_a_path_preset(folder, tmp_path, capsys, monkeypatch):
    path, hf = folder
    prompt = "hello"
    want = greedy(hf, list(prompt.encode()), 6)
    assert main(["generate", str(path), "--prompt", prompt, "--max-new-tokens", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == want
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[models.my-llama]\ntype = "hf-causal-lm"\npath = "{path}"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "my-llama", "--prompt", prompt, "--max-new-tokens", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == want
    zoo.api._cached_config.cache_clear()
    assert zoo.generate(str(path), None, [prompt], max_new_tokens=6).ids[0] == want


def test_show_params_of_a_path_preset_reads_no_weights(folder, tmp_path, capsys, monkeypatch):
    path, hf = folder
    (tmp_path / "registry.toml").write_text(f'[models.my-llama]\ntype = "hf-causal-lm"\npath = "{path}"\n')
    monkeypatch.chdir(tmp_path)
    (path / "model.safetensors").write_bytes(b"\0" * 16)  # unreadable weights: only config.json is read
    assert main(["show", "my-llama", "--params", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["parameters"] == sum(p.numel() for p in hf.parameters())


def test_transformers_progress_output_only_with_verbose(folder, capsys):
    """transformers' "Loading weights" bar stays out of a command's output unless --verbose."""
    from transformers.utils import logging

    path, _ = folder
    args = ["generate", str(path), "--prompt", "hi", "--max-new-tokens", "2", "--tokenizer", "byte"]
    try:
        logging.enable_progress_bar()
        assert main(args) == 0
        assert "Loading weights" not in capsys.readouterr().err and not logging.is_progress_bar_enabled()
        logging.enable_progress_bar()  # what a process that never ran quiet starts with
        assert main([*args, "--verbose"]) == 0
        assert "Loading weights" in capsys.readouterr().err
    finally:
        logging.enable_progress_bar()
        logging.set_verbosity_warning()
