"""MiniGPT vs transformers' GPT2LMHeadModel of the identical shape: training tokens/s on CPU.

Same layers, width, heads, vocabulary, context, batch, optimizer (AdamW) and loss, measured side
by side in one run (interleaved rounds, medians), in fp32 and bf16-mixed autocast.
Goal (issue 3): MiniGPT at least 1.3x faster.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_range, interleave, median_rate, paired_ratio, print_table, write_result

import zoo

SHAPE = {"vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128}


def build_pair(shape: dict[str, int]) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    mini = zoo.build_model({"type": "minigpt", **shape, "activation": "gelu_tanh", "dropout": 0.0})
    cfg = GPT2Config(
        vocab_size=shape["vocab_size"],
        n_embd=shape["d_model"],
        n_layer=shape["n_layers"],
        n_head=shape["n_heads"],
        n_positions=shape["max_seq_len"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_new",
        tie_word_embeddings=True,
        bos_token_id=None,  # GPT-2's 50256 lies outside small vocabularies
        eos_token_id=None,
    )
    hf = GPT2LMHeadModel(cfg)
    return mini, hf


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def step_fn(model: torch.nn.Module, is_hf: bool, batch: int, ctx: int, vocab: int, autocast: bool, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (steps, batch, ctx + 1), generator=g)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    model.train()

    def run() -> int:
        for s in range(steps):
            x, y = ids[s, :, :-1], ids[s, :, 1:]
            with amp:
                logits = model(x).logits if is_hf else model(x)[0]
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return steps * batch * ctx

    return run


def measure(shape: dict[str, int], batch: int, rounds: int, steps: int) -> list[dict]:
    mini, hf = build_pair(shape)
    rows = []
    for precision in ("fp32", "bf16-mixed"):
        autocast = precision == "bf16-mixed"
        fns = {
            "minigpt": step_fn(mini, False, batch, shape["max_seq_len"], shape["vocab_size"], autocast, steps),
            "hf-gpt2": step_fn(hf, True, batch, shape["max_seq_len"], shape["vocab_size"], autocast, steps),
        }

        def rate(fn):
            return lambda: median_rate(fn, 1)

        rates = interleave({k: rate(fn) for k, fn in fns.items()}, rounds)  # warm-up round first
        med = {k: statistics.median(v) for k, v in rates.items()}
        ratio = paired_ratio(rates["minigpt"], rates["hf-gpt2"], True)
        rows.append(
            {
                "precision": precision,
                "minigpt tok/s": med["minigpt"],
                "hf gpt2 tok/s": med["hf-gpt2"],
                "ratio": ratio["median"],
                "ratio range": fmt_range(ratio),
                "rounds": rates,
            }
        )
    print(f"params: minigpt {count(mini):,}  hf {count(hf):,}  shape {shape}  batch {batch}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    rows = measure(SHAPE, args.batch, args.rounds, args.steps)
    print_table([{k: v for k, v in r.items() if k != "rounds"} for r in rows])
    print("goal: ratio >= 1.3")
    write_result("train_speed", rows, {"shape": SHAPE, "batch": args.batch})


if __name__ == "__main__":
    main()
