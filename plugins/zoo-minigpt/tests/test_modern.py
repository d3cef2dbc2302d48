"""MiniGPT's modern options, each on its own and together: RoPE, SwiGLU, QK-norm, GQA, zero-init."""

from __future__ import annotations

import pytest
import torch

import zoo
import zoo.testing
from zoo.lm.generation import generate
from zoo.lm.tokenizers import ByteTokenizer

BASE = {"type": "minigpt", "vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 64}
VARIANTS = {
    "rope": {"positions": "rope", "rope_theta": 500.0},
    "swiglu": {"mlp": "swiglu"},
    "qk_norm": {"qk_norm": True},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "untied-zero-init": {"tie_weights": False, "zero_init": True},
    "llama": {"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False, "n_kv_heads": 2},
    "all": {"positions": "rope", "mlp": "swiglu", "qk_norm": True, "n_kv_heads": 2, "tie_weights": False},
}
TOK = ByteTokenizer()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_passes_the_conformance_suite(name):
    zoo.testing.check_model({**BASE, **VARIANTS[name]})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cache_and_static_decoding_match_the_full_forward(name):
    torch.manual_seed(0)
    model = zoo.build_model({**BASE, **VARIANTS[name]}).eval()
    for p in model.parameters():  # zero-init would make every logit equal: make them distinct
        torch.nn.init.normal_(p, std=0.2)
    prompts = ["hi", "a longer prompt"]
    dynamic = generate(model, TOK, prompts, "greedy", max_new_tokens=12)
    static = generate(model, TOK, prompts, "greedy", max_new_tokens=12, static=True)
    assert dynamic.ids == static.ids
    for prompt, new in zip(prompts, dynamic.ids, strict=True):  # the cache changes nothing
        ids = torch.tensor([TOK.encode(prompt)])
        for token in new:
            assert int(model(ids)[0][0, -1].argmax()) == token
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    sampled = generate(model, TOK, prompts, "creative", max_new_tokens=8, seed=3)  # every sampler works
    assert [len(i) for i in sampled.ids] == [8, 8]


def test_shapes_of_the_options():
    gqa = zoo.build_model({**BASE, "n_kv_heads": 2})
    assert gqa.blocks[0].attn.qkv.out_features == (4 + 2 * 2) * 16
    assert gqa.new_cache(3, 10).k[0].shape == (3, 2, 10, 16)  # the cache holds only the KV heads
    swiglu = zoo.build_model({**BASE, "mlp": "swiglu"})
    hidden = swiglu.zoo_spec.d_ff
    assert hidden == 176 and hidden % 8 == 0  # 2/3 of 4 x 64, rounded up to a multiple of 8
    assert swiglu.blocks[0].mlp.fc.out_features == 2 * hidden  # fused gate | up
    rope = zoo.build_model({**BASE, "positions": "rope"})
    assert rope.pos_emb is None and "rope_cos" not in rope.state_dict()  # derived, not saved
    zero = zoo.build_model({**BASE, "tie_weights": False, "zero_init": True})
    assert not zero.head.weight.any() and not zero.blocks[0].attn.proj.weight.any()
    assert zero.blocks[0].attn.qkv.weight.any()


def test_rope_attends_by_relative_position():
    """Shifting every position by the same offset leaves RoPE's logits unchanged (relative)."""
    torch.manual_seed(0)
    model = zoo.build_model({**BASE, "positions": "rope"}).eval()
    ids = torch.randint(0, 256, (1, 12))
    at0 = model(ids, position_ids=torch.arange(12)[None])[0]
    at9 = model(ids, position_ids=torch.arange(9, 21)[None])[0]
    torch.testing.assert_close(at0, at9, atol=1e-4, rtol=1e-4)
    learned = zoo.build_model(BASE).eval()
    assert not torch.allclose(
        learned(ids, position_ids=torch.arange(12)[None])[0], learned(ids, position_ids=torch.arange(9, 21)[None])[0]
    )


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"n_kv_heads": 3}, r"n_kv_heads \(3\) must divide n_heads \(4\)"),
        ({"positions": "rope", "d_model": 60, "n_heads": 4}, "rope needs an even head_dim"),
    ],
)
def test_invalid_combinations_name_the_fields(fields, match):
    with pytest.raises(zoo.SpecError, match=match):
        zoo.build_model({**BASE, **fields})


def test_llama_presets_are_llama_shaped():
    spec = zoo.model_spec("minigpt-llama-small")
    assert (spec.positions, spec.mlp, spec.norm, spec.bias, spec.kv_heads) == ("rope", "swiglu", "rmsnorm", False, 2)
    zoo.testing.check_model("minigpt-llama-tiny")


def test_rotary_attention_inputs_have_the_gradient_of_rotating_by_hand():
    """`RotaryQKV` (hand-written backward: no copies per split) against autograd through
    `apply_rope` and plain splits, forward and backward, with grouped-query heads."""
    from zoo_minigpt.model import RotaryQKV, apply_rope, rope_table

    spec = zoo.model_spec({"type": "minigpt", "d_model": 16, "n_heads": 4, "n_kv_heads": 2, "positions": "rope"})
    cos, sin = (t[:5].double()[None, :, None] for t in rope_table(spec))  # (1, T, 1, D)
    qkv = torch.randn(2, 5, 8, 4, dtype=torch.double, requires_grad=True)  # (B, T, H + 2 KV, D)
    assert torch.autograd.gradcheck(lambda t: RotaryQKV.apply(t, cos, sin, 4, 2), (qkv,))

    def by_hand(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qk, v = t.split([6, 2], dim=2)
        q, k = apply_rope(qk, (cos, sin)).transpose(1, 2).split([4, 2], dim=1)
        return q, k, v.transpose(1, 2)

    grads = [torch.randn(2, h, 5, 4, dtype=torch.double) for h in (4, 2, 2)]
    results = []
    for fn in (lambda t: RotaryQKV.apply(t, cos, sin, 4, 2), by_hand):
        out = fn(qkv)
        results.append((out, torch.autograd.grad(out, qkv, grads)[0]))
    (out_a, grad_a), (out_b, grad_b) = results
    for a, b in zip(out_a, out_b, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_a, grad_b)
