"""Samplers on hand-made logits: each filter follows its definition."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from helpers import make_module

import zoo
from zoo.lm.samplers import Greedy, Sampling, min_p, repetition_penalty, top_k, top_p


def reference_top_p(logits: torch.Tensor, p: float) -> set[int]:
    """The smallest set of most likely tokens with cumulative probability >= p (a plain loop)."""
    probs = logits.softmax(-1).tolist()
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= p:
            break
    return kept


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0])
def test_top_p_matches_reference(p):
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        logits = torch.randn(1, 12, generator=g) * 2
        kept = set(torch.nonzero(torch.isfinite(top_p(logits, p)[0])).flatten().tolist())
        assert kept == reference_top_p(logits[0], p)


def test_top_p_on_exact_probabilities():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(top_p(logits, p)[0]).tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.8) == [True, True, False, False]
    assert kept(0.81) == [True, True, True, False]


def test_top_k_never_emits_outside_the_top_k():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g)
    allowed = torch.topk(logits, 5, dim=-1).indices
    sampler = Sampling(temperature=2.0, k=5, p=1.0, min_p_=0.0, penalty=1.0)
    seen = torch.zeros(64, 50, dtype=torch.bool)
    for _ in range(50):
        picks = sampler.select(logits, seen, g)
        assert (allowed == picks[:, None]).any(-1).all()
    assert torch.isfinite(top_k(logits, 5)).sum(-1).eq(5).all()


def test_repetition_penalty_definition():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]  # positive divided, negative multiplied, unseen kept
    greedy = Greedy(penalty=3.0)
    assert greedy.select(torch.tensor([[3.0, 2.0]]), torch.tensor([[True, False]]), None).item() == 1


def test_min_p_drops_tokens_below_the_threshold():
    logits = torch.tensor([[0.6, 0.25, 0.1, 0.05]]).log()
    assert torch.isfinite(min_p(logits, 0.2)[0]).tolist() == [True, True, False, False]


def test_temperature_to_zero_approaches_greedy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 100, generator=g)
    seen = torch.zeros(32, 100, dtype=torch.bool)
    cold = Sampling(temperature=1e-4, k=None, p=1.0, min_p_=0.0, penalty=1.0).select(logits, seen, g)
    assert torch.equal(cold, logits.argmax(-1))
    hot = Sampling(temperature=5.0, k=None, p=1.0, min_p_=0.0, penalty=1.0).select(logits, seen, g)
    assert not torch.equal(hot, logits.argmax(-1))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"type": "sample", "temperature": 0}, r"sample\.temperature: Input should be greater than 0"),
        ({"type": "top-p", "p": 1.5}, r"top-p\.p: Input should be less than or equal to 1"),
        ({"type": "top-k", "k": 0}, r"top-k\.k: Input should be greater than or equal to 1"),
        ({"type": "sample", "top_q": 0.9}, r"sample\.top_q: unknown field; did you mean 'top_p'"),
    ],
)
def test_sampler_spec_validation(config, spec, match):
    with pytest.raises(zoo.SpecError, match=match):
        zoo.build_sampler(spec, config=config)


def test_sampler_given_a_classifier_fails_at_build_time(config):
    with pytest.raises(zoo.ProtocolError, match="'greedy' works on causal-lm models, but model type 'simplenet'"):
        zoo.build_sampler("greedy", model="simplenet-small", config=config)


class TypicalSpec(zoo.SamplerSpec):
    """A third-party sampler: locally typical sampling."""

    type: Literal["typical-inline"] = "typical-inline"
    mass: float = zoo.Field(0.9, gt=0, le=1, description="probability mass kept")

    def build(self):
        return Typical(self.mass)


class Typical:
    def __init__(self, mass):
        self.mass = mass

    def select(self, logits, seen, generator):
        logp = logits.log_softmax(-1)
        entropy = -(logp.exp() * logp).sum(-1, keepdim=True)
        surprise = (-logp - entropy).abs()
        order = surprise.argsort(-1)
        probs = logp.exp().gather(-1, order)
        keep = (probs.cumsum(-1) - probs) < self.mass
        filtered = torch.full_like(logits, float("-inf")).scatter(
            -1, order, torch.where(keep, logp.gather(-1, order), float("-inf"))
        )
        return torch.multinomial(filtered.softmax(-1), 1, generator=generator).squeeze(-1)


def test_third_party_sampler_plugs_in_without_touching_zoo(make_config):
    @zoo.hookimpl
    def zoo_register_samplers(register):
        register(TypicalSpec)

    cfg = make_config(
        {"samplers": {"typical": {"type": "typical-inline", "mass": 0.5}}},
        make_module("typical_plugin", zoo_register_samplers=zoo_register_samplers),
    )
    sampler = zoo.build_sampler("typical", config=cfg)
    picks = sampler.select(torch.randn(4, 10), torch.zeros(4, 10, dtype=torch.bool), torch.Generator().manual_seed(0))
    assert picks.shape == (4,)
    assert cfg.registry.entry("samplers", "typical-inline").distribution == "typical_plugin"


def test_draw_follows_the_distribution():
    from zoo.lm.samplers import draw

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]).expand(40_000, 5)
    picks = draw(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(picks, minlength=5).float() / len(picks)
    torch.testing.assert_close(freq, probs[0], atol=0.01, rtol=0)
    assert freq[4] == 0
