"""ONNX export of Hugging Face causal LMs: model.onnx with presents and decoder_with_past.onnx, the
same interface as MiniGPT's, decoding in onnxruntime as the torch model does; `zoo export` takes a
HF folder like `zoo generate` does."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import zoo
import zoo.testing
from zoo.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def write_gpt2(folder):
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=256, n_positions=64, bos_token_id=None)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def exported(request, tmp_path_factory, make_llama):
    """One export per architecture (dynamo export is slow), through the CLI, warnings recorded."""
    root = tmp_path_factory.mktemp(request.param)
    folder = make_llama(root / "hf") if request.param == "llama" else write_gpt2(root / "hf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["export", str(folder), "--format", "onnx", "--out", str(root / "onnx")])
    return folder, root / "onnx", code, caught


def test_a_hf_folder_exports_with_past_and_decodes_like_torch(exported):
    folder, out, code, _ = exported
    assert code == 0
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["model_type"] == "hf-causal-lm" and "note" not in meta
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    prompt = torch.randint(0, int(model.vocab_size), (2, 5), generator=torch.Generator().manual_seed(3))
    zoo.testing.check_onnx_decoding(model, out, prompt, steps=8)
    assert (out / "tokenizer.json").is_file() == (folder / "tokenizer.json").is_file()


def test_the_export_runs_in_eval_mode(exported):
    *_, caught = exported
    assert not [str(w.message) for w in caught if "training mode" in str(w.message)]


def test_caches_other_than_a_key_value_pair_per_layer_have_no_past_layout():
    """Sliding-window attention and recurrent states export logits only (`zoo.PastTensors`)."""
    mistral = {"model_type": "mistral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64}
    mistral |= {"num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 8}
    mamba = {"model_type": "mamba", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "state_size": 4}
    for spec in ({"config": mistral}, {"config": mamba, "attn_implementation": "eager"}):
        model = zoo.build_model({"type": "hf-causal-lm", **spec})
        assert isinstance(model, zoo.PastTensors) and model.past_layout() is None, spec
    assert zoo.build_model("hf-gpt2-tiny").past_layout() == (2, 2, 32)


def test_export_to_hf_takes_a_hf_folder(tmp_path, make_llama):
    folder = make_llama(tmp_path / "llama")
    assert main(["export", str(folder), "--format", "hf", "--out", str(tmp_path / "out")]) == 0
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    original = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(reloaded(ids).logits, original(ids).logits)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
