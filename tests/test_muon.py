"""The `muon` optimizer: Muon on hidden weight matrices, AdamW on the rest, each with its own lr."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import PluginError
from zoo.storage import read_tensors
from zoo.trainers import muon as optim
from zoo.trainers.engine import build_optimizer
from zoo.trainers.muon import (
    NS_COEFFS,
    MuonAdamW,
    _gram_newton_schulz,
    fused_row_blocks,
    muon_matrices,
    orthogonalize,
)
from zoo.trainers.optimizers import MuonSpec

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 6,
    "batch_size": 4,
    "context": 16,
    "lr": 3e-3,
    "eval_every": 0,
    "eval_batches": 1,
    "checkpoint_every": 3,
    "progress": False,
    "optimizer": {"name": "muon", "muon_lr": 0.05, "weight_decay": 0.1},
    "schedule": {"name": "cosine", "warmup_steps": 2},
}


def test_newton_schulz_orthogonalizes_every_matrix_of_a_batch():
    torch.manual_seed(0)
    for shape in [(3, 16, 48), (2, 48, 16), (4, 32, 32)]:
        grads = torch.randn(shape) * torch.logspace(-1, 1, shape[-1])  # columns of unequal scale
        out = orthogonalize(grads, 5)
        assert out.shape == grads.shape and out.dtype == grads.dtype
        s = torch.linalg.svdvals(out)
        assert float(s.max()) < 1.3 and float((s > 0.6).float().mean()) > 0.8, s  # Muon's quintic: ~[0.7, 1.2]
        u, _, vh = torch.linalg.svd(grads, full_matrices=False)
        polar = u @ vh  # the exact orthogonal factor it approximates
        assert bool((torch.nn.functional.cosine_similarity(out.flatten(1), polar.flatten(1)) > 0.9).all())
        alone = torch.stack([orthogonalize(g[None], 5)[0] for g in grads])
        torch.testing.assert_close(out, alone)  # batched over same-shape matrices = one at a time


def test_the_gram_form_is_the_same_iteration_in_exact_arithmetic(monkeypatch):
    """Wide matrices iterate on their m x m Gram matrix (fewer FLOPs); in float64 that is the
    plain iteration x <- a x + (b G + c G^2) x, up to rounding."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 40, dtype=torch.float64)
    x = x / x.norm(dim=(-2, -1), keepdim=True)
    plain = x
    a, b, c = NS_COEFFS
    for _ in range(3):
        gram = plain @ plain.mT
        plain = a * plain + (b * gram + c * gram @ gram) @ plain
    torch.testing.assert_close(_gram_newton_schulz(x, 3), plain, rtol=1e-9, atol=1e-9)
    calls: list[int] = []  # orthogonalize takes that form for wide matrices, restarting halfway
    monkeypatch.setattr(optim, "_gram_newton_schulz", lambda x, steps: calls.append(steps) or x)
    optim.orthogonalize(torch.randn(1, 8, 24), 5)
    optim.orthogonalize(torch.randn(1, 8, 16), 5)  # not wide enough to gain
    assert calls == [2, 3]


def test_a_tall_and_a_wide_matrix_share_one_batch_and_each_gets_its_own_update():
    """(8, 4) and (4, 8) orthogonalise together (the tall one transposed); the tall one's update is
    the transpose of the wide one's for the transposed gradient, scaled by sqrt(rows / cols)."""
    torch.manual_seed(0)
    tall, wide = torch.nn.Parameter(torch.zeros(8, 4)), torch.nn.Parameter(torch.zeros(4, 8))
    tall.grad = torch.randn(8, 4)
    wide.grad = tall.grad.T.clone()
    group = {"params": [tall, wide], "algo": "muon", "weight_decay": 0.0}
    MuonAdamW([group], lr=0.1, betas=(0.9, 0.99), eps=1e-8, momentum=0.0, ns_steps=5).step()
    torch.testing.assert_close(tall.detach(), wide.detach().T * 2**0.5)
    alone = orthogonalize(wide.grad[None], 5)[0]
    torch.testing.assert_close(wide.detach(), -0.1 * alone)


def test_each_block_of_a_fused_projection_is_orthogonalised_on_its_own():
    """A (12, 4) weight declared as blocks of 4, 4 and 4 rows (q, k, v) moves exactly as three
    (4, 4) weights would, not as one tall matrix."""
    torch.manual_seed(0)
    fused = torch.nn.Parameter(torch.zeros(12, 4))
    fused.grad = torch.randn(12, 4)
    apart = [torch.nn.Parameter(torch.zeros(4, 4)) for _ in range(3)]
    for p, g in zip(apart, fused.grad.split(4), strict=True):
        p.grad = g.clone()
    settings = {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8, "momentum": 0.0, "ns_steps": 5}
    group = {"algo": "muon", "weight_decay": 0.0}
    MuonAdamW([{**group, "params": [fused]}], **settings, row_blocks={id(fused): (4, 4, 4)}).step()
    MuonAdamW([{**group, "params": apart}], **settings).step()
    torch.testing.assert_close(fused.detach(), torch.cat([p.detach() for p in apart]))
    whole = torch.nn.Parameter(torch.zeros(12, 4))
    whole.grad = fused.grad.clone()
    MuonAdamW([{**group, "params": [whole]}], **settings).step()
    assert not torch.allclose(whole.detach(), fused.detach(), atol=1e-3)  # one tall matrix differs


def test_a_loaded_state_replaces_the_momentum_the_optimizer_holds():
    """Muon keeps its momentum stacked per batch of same-shape matrices; `state_dict` writes it back
    per parameter and `load_state_dict` replaces it, even in an optimizer that has already stepped."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4, 8))]
    grads = [[torch.randn(8, 4), torch.randn(4, 8)] for _ in range(4)]
    settings = {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-8, "momentum": 0.9, "ns_steps": 5}

    def step(opt: MuonAdamW, g: list[torch.Tensor]) -> None:
        for p, gp in zip(params, g, strict=True):
            p.grad = gp.clone()
        opt.step()

    opt = MuonAdamW([{"params": params, "algo": "muon", "weight_decay": 0.0}], **settings)
    step(opt, grads[0])
    saved, weights = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    assert torch.count_nonzero(saved["state"][0]["momentum_buffer"]) > 0
    step(opt, grads[1])  # the momentum moves on
    for p, w in zip(params, weights, strict=True):
        p.data.copy_(w)
    opt.load_state_dict(saved)
    step(opt, grads[2])
    after_load = [p.detach().clone() for p in params]
    for p, w in zip(params, weights, strict=True):
        p.data.copy_(w)
    fresh = MuonAdamW([{"params": params, "algo": "muon", "weight_decay": 0.0}], **settings)
    fresh.load_state_dict(saved)
    step(fresh, grads[2])
    for a, b in zip(after_load, params, strict=True):
        torch.testing.assert_close(a, b.detach())


def test_minigpt_declares_its_query_key_value_blocks_and_a_wrong_declaration_is_named():
    model = zoo.build_model({**MODEL, "n_heads": 4, "n_kv_heads": 2})  # d_model 32: q 32 rows, k and v 16 each
    blocks = fused_row_blocks(model)
    assert [blocks.get(id(b.attn.qkv.weight)) for b in model.blocks] == [(32, 16, 16)] * 2
    assert len(blocks) == 2  # only the fused projections
    model.blocks[1].attn.qkv.zoo_fused_outputs = (32, 16)
    with pytest.raises(PluginError, match=r"blocks\.1\.attn\.qkv: zoo_fused_outputs \(32, 16\) .* 64 output rows"):
        build_optimizer(MuonSpec(), model, 3e-3, torch.device("cpu"))
    model.blocks[1].attn.qkv.zoo_fused_outputs = 64  # not a tuple of sizes: the same one message
    with pytest.raises(PluginError, match=r"zoo_fused_outputs 64 must be positive integers"):
        build_optimizer(MuonSpec(), model, 3e-3, torch.device("cpu"))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    for tied in (True, False):
        model = zoo.build_model({**MODEL, "tie_weights": tied})
        hidden = {id(p) for p in muon_matrices(model)}
        names = {n for n, p in model.named_parameters() if id(p) in hidden}
        assert names == {
            f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
        }
        opt = build_optimizer(MuonSpec(muon_lr=0.05), model, 3e-3, torch.device("cpu"))
        assert isinstance(opt, MuonAdamW)
        by_name = {g["name"]: g for g in opt.param_groups}
        assert by_name["muon"]["algo"] == "muon" and by_name["muon"]["peak_lr"] == 0.05
        assert by_name["decay"]["algo"] == "adamw" and by_name["decay"]["peak_lr"] == 3e-3
        assert {id(p) for p in by_name["muon"]["params"]} == hidden  # embeddings, head, norms, biases: AdamW


def test_muon_trains_and_each_group_follows_the_schedule_at_its_own_lr(tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        "--model",
        json.dumps(MODEL),
        "--trainer",
        json.dumps({**TRAINER, "max_steps": 40, "log_every": 1, "checkpoint_every": 20}),
    ]
    assert main([*argv, "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    groups = json.loads((out / "checkpoints" / "step-00000020" / "state.json").read_text())["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["muon"] / lrs["decay"] == pytest.approx(0.05 / 3e-3)  # the same schedule factor on both


def test_muon_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    argv = ["train", "--model", json.dumps(MODEL), "--trainer", json.dumps(TRAINER)]
    assert main([*argv, "--out", str(straight)]) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000006")  # as if killed after step 3
    shutil.rmtree(resumed / "model")
    assert main([*argv, "--out", str(resumed), "--resume"]) == 0
    a = read_tensors(straight / "model" / "model.safetensors")
    b = read_tensors(resumed / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((resumed / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert {g["algo"] for g in state["optimizer"]["param_groups"]} == {"muon", "adamw"}
