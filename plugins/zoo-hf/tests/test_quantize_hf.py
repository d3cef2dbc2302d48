"""`zoo.quantize` on a Hugging Face folder: transformers memory-maps the fp32 weights, and reading
them to quantize must not leave the whole file resident beside the int8 copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import zoo


def resident_file_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssFile")) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc shows the resident set")
def test_quantizing_a_mapped_folder_hands_the_fp32_pages_back(tmp_path):
    config = LlamaConfig(
        vocab_size=16384,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    size_mb = (tmp_path / "model.safetensors").stat().st_size / 2**20  # ~35 MB; the head and layers ~19
    model = zoo.open_model(tmp_path, zoo.default_config())
    before = resident_file_mb()
    zoo.quantize(model)
    assert resident_file_mb() - before < 0.2 * size_mb  # without the page-out: ~0.5 x the file
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():  # the pages handed back fault in again where a tensor still reads them
        logits, _ = model(ids)
    assert logits.shape == (1, 4, 16384) and bool(torch.isfinite(logits).all())
