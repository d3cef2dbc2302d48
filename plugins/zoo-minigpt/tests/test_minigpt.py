"""MiniGPT: shapes, causality, KV cache, tying, init, validation, learning, round trips."""

from __future__ import annotations

import math

import pytest
import torch

import zoo

TINY = {"type": "minigpt", "vocab_size": 64, "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 32}


def build(**overrides):
    torch.manual_seed(0)
    return zoo.build_model({**TINY, **overrides}).eval()


def test_shapes():
    model = build()
    logits, cache = model(torch.randint(0, 64, (3, 10)))
    assert logits.shape == (3, 10, 64) and cache is None


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"norm": "rmsnorm", "bias": False, "activation": "silu"},
        {"activation": "gelu_tanh", "tie_weights": False, "mlp_ratio": 2.0},
    ],
)
def test_changing_a_future_token_never_changes_earlier_logits(variant):
    model = build(**variant)
    ids = torch.randint(0, 64, (2, 16))
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 64
    a, _ = model(ids)
    b, _ = model(changed)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_cached_and_uncached_logits_agree():
    model = build()
    ids = torch.randint(0, 64, (2, 20))
    full, _ = model(ids)
    cache = model.new_cache(2, 32)
    parts = [model(ids[:, :7], cache)[0]]
    for t in range(7, 20):
        parts.append(model(ids[:, t : t + 1], cache)[0])
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_weight_tying_shares_storage():
    tied, untied = build(), build(tie_weights=False)
    assert tied.head.weight.data_ptr() == tied.tok_emb.weight.data_ptr()
    assert untied.head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 64 * 32


def test_gpt2_init_statistics():
    model = zoo.build_model({**TINY, "d_model": 256, "n_heads": 4, "n_layers": 8, "vocab_size": 512})
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[3].mlp.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.blocks[3].attn.proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


def test_padding_idx_embedding_is_zero():
    model = build(padding_idx=0)
    assert torch.count_nonzero(model.tok_emb.weight[0]) == 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_heads", 5, r"d_model \(32\) must be divisible by n_heads \(5\)"),
        ("padding_idx", 64, r"padding_idx \(64\) must be below vocab_size \(64\)"),
        ("d_model", 0, r"minigpt\.d_model: Input should be greater than 0"),
    ],
)
def test_validation_messages(field, value, match):
    with pytest.raises(zoo.SpecError, match=match):
        zoo.build_model({**TINY, field: value})


def test_too_long_input_is_refused():
    with pytest.raises(ValueError, match="exceeds max_seq_len=32"):
        build()(torch.zeros(1, 33, dtype=torch.long))


def test_tiny_model_overfits_a_short_text():
    model = build(vocab_size=256, max_seq_len=64).train()
    data = torch.tensor([list(b"to be or not to be, that is the question. " * 2)[:49]])
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = build()
    ids = torch.randint(0, 64, (2, 12))
    zoo.save(model, tmp_path / "m")
    loaded = zoo.load(tmp_path / "m")
    assert torch.equal(loaded(ids)[0], model(ids)[0])
    assert loaded.head.weight.data_ptr() == loaded.tok_emb.weight.data_ptr()  # still tied


def test_gpt2_shape_on_meta():
    gpt2 = {"type": "minigpt", "vocab_size": 50257, "d_model": 768, "n_layers": 12, "n_heads": 12, "max_seq_len": 1024}
    estimate = zoo.parameter_estimate(zoo.model_spec(gpt2))
    assert 123_000_000 < estimate["parameters"] < 125_000_000  # GPT-2 small: 124M with tied head
