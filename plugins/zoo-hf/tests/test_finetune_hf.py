"""Fine-tuning from Hugging Face folders: a tiny Llama with its own tokenizer, and a `zoo import`ed GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, PreTrainedTokenizerFast

import zoo
from zoo.cli import main
from zoo.lm.text_data import TokenData
from zoo.lm.trainer import CausalLMTask, lm_loss

CHILD = {"type": "causal-lm", "max_steps": 3, "batch_size": 4, "context": 16, "log_every": 1, "progress": False}


def first_logged_loss(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r["split"] == "train" and r["step"] == 1)


def test_a_tiny_llama_folder_fine_tunes_with_its_own_tokenizer(tmp_path, corpus, make_llama):
    folder = make_llama(tmp_path / "llama")
    run = tmp_path / "run"
    args = ["train", "--init-from", str(folder), "--trainer", json.dumps(CHILD), "--data", str(corpus)]
    assert main([*args, "--out", str(run), "--device", "cpu"]) == 0
    # tokens are the folder tokenizer's: the data cache holds exactly what it encodes
    hf_tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tokens = np.memmap(run / "data" / "tokens.bin", dtype=np.uint16, mode="r")
    assert list(tokens[:20]) == hf_tok.encode(corpus.read_text(), add_special_tokens=False)[:20]
    # the first logged loss is the folder model's own loss on the first batch
    hf = LlamaForCausalLM.from_pretrained(folder).eval()
    task = CausalLMTask(TokenData(tokens, 0.1), CHILD["context"])
    x, y = task.sample(torch.Generator().manual_seed(0), CHILD["batch_size"])
    with torch.no_grad():
        expected = float(lm_loss(hf(input_ids=x).logits, y))
    assert first_logged_loss(run) == pytest.approx(expected, rel=1e-5)
    # the result is an artifact zoo and transformers both read, with the folder's tokenizer and its lineage
    model = zoo.load(run / "model")
    assert model.zoo_tokenizer.encode("quick daft zebras") == hf_tok.encode(
        "quick daft zebras", add_special_tokens=False
    )
    LlamaForCausalLM.from_pretrained(run / "model")
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["parent"]["path"] == str(folder.resolve())


def test_a_zoo_imported_gpt2_fine_tunes(tmp_path, corpus):
    hf_dir = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=256, n_positions=64)).save_pretrained(hf_dir)
    assert main(["import", str(hf_dir), "--out", str(tmp_path / "imported")]) == 0
    run = tmp_path / "run"
    args = ["train", "--init-from", str(tmp_path / "imported"), "--trainer", json.dumps(CHILD), "--data", str(corpus)]
    assert main([*args, "--out", str(run), "--device", "cpu"]) == 0
    assert zoo.load(run / "model").zoo_spec.type == "minigpt"
    tokens = np.memmap(run / "data" / "tokens.bin", dtype=np.uint16, mode="r")
    task = CausalLMTask(TokenData(tokens, 0.1), CHILD["context"])
    x, y = task.sample(torch.Generator().manual_seed(0), CHILD["batch_size"])
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        expected = float(lm_loss(hf(input_ids=x).logits, y))
    assert first_logged_loss(run) == pytest.approx(expected, rel=1e-5)
