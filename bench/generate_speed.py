"""Generation speed: MiniGPT + zoo's decode loop vs transformers' generate() on a GPT2LMHeadModel
of the identical shape, side by side in one run on CPU; and the KV cache's per-token cost.

Goals (issue 4): at least 3x HF's tokens/s at batch 1; with the cache, the last 100 tokens of a
1000-token generation cost at most 1.5x the first 100.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_range, interleave, paired_ratio, print_table, write_result

import zoo
from zoo.lm.generation import Decoder, generate
from zoo.lm.samplers import Greedy
from zoo.lm.tokenizers import ByteTokenizer

SHAPE = {"vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 1088}
SAMPLERS = {
    "greedy": ("greedy", {"do_sample": False}),
    "top-p": ({"type": "top-p", "p": 0.9}, {"do_sample": True, "top_p": 0.9, "top_k": 0}),
}


def build_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_speed import build_pair as pair

    mini, hf = pair(SHAPE)
    return mini.eval(), hf.eval()


def zoo_call(
    model: torch.nn.Module, prompts: list[list[int]], sampler: object, new: int, compile: bool = False
) -> Callable[[], float]:
    """One zoo generation per call; returns its new tokens per second."""
    tok = ByteTokenizer()
    seeds = itertools.count()

    def call() -> float:
        start = time.perf_counter()
        generate(model, tok, prompts, sampler, max_new_tokens=new, seed=next(seeds), compile=compile)
        return len(prompts) * new / (time.perf_counter() - start)

    return call


def hf_call(model: torch.nn.Module, prompts: list[list[int]], kwargs: dict, new: int) -> Callable[[], float]:
    """One `generate()` of the same prompts per call; returns its new tokens per second."""
    ids = torch.tensor(prompts)
    seeds = itertools.count()

    def call() -> float:
        torch.manual_seed(next(seeds))
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
                **kwargs,
            )
        assert out.shape[1] == ids.shape[1] + new
        return len(prompts) * new / (time.perf_counter() - start)

    return call


def rates(calls: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Tokens/s of each side, rounds interleaved (zoo, hf, zoo, hf, ...) after a warm-up round."""
    return interleave(calls, rounds)


def per_token_times(model: torch.nn.Module, new: int, runs: int = 3) -> list[float]:
    """Per decoding step, the median wall time over ``runs`` long greedy generations (KV cache).

    A first, unmeasured run warms up; the prefill is not a decoding step and is left out.
    """
    runs_times = []
    for run in range(runs + 1):
        decoder = Decoder(model, [[1] * 24], Greedy(), max_new_tokens=new, runtime=zoo.Runtime(device="cpu"))
        steps = decoder.steps()
        next(steps)  # prefill + first token
        times, last = [], time.perf_counter()
        for _ in steps:
            now = time.perf_counter()
            times.append(now - last)
            last = now
        if run:
            runs_times.append(times)
    return [statistics.median(step) for step in zip(*runs_times, strict=True)]


def no_cache_step(model: torch.nn.Module, context: int, reps: int = 5) -> float:
    """Seconds per new token when the whole prefix is recomputed (no cache) at this context."""
    ids = torch.randint(0, 256, (1, context))
    with torch.inference_mode():
        model(ids)
        start = time.perf_counter()
        for _ in range(reps):
            model(ids)[0][:, -1].argmax(-1)
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    mini, hf = build_pair()
    g = torch.Generator().manual_seed(0)
    rows = []
    measured: dict[str, dict[str, list[float]]] = {}  # every round's tok/s, for the results file
    for batch in (1, 8):
        prompts = torch.randint(0, 256, (batch, 32), generator=g).tolist()
        for name, (zoo_sampler, hf_kwargs) in SAMPLERS.items():
            calls = {
                "zoo": zoo_call(mini, prompts, zoo_sampler, args.new),
                "zoo compiled": zoo_call(mini, prompts, zoo_sampler, args.new, compile=True),
                "hf": hf_call(hf, prompts, hf_kwargs, args.new),
            }
            r = rates(calls, args.rounds)
            med = {k: statistics.median(v) for k, v in r.items()}
            rows.append(
                {
                    "batch": batch,
                    "sampler": name,
                    "zoo tok/s": med["zoo"],
                    "zoo compiled tok/s": med["zoo compiled"],
                    "hf tok/s": med["hf"],
                    "ratio": paired_ratio(r["zoo"], r["hf"], True)["median"],
                    "ratio range": fmt_range(paired_ratio(r["zoo"], r["hf"], True)),
                    "compiled ratio": paired_ratio(r["zoo compiled"], r["hf"], True)["median"],
                }
            )
            measured[f"batch {batch}, {name}"] = r
    print_table(rows)
    print("goal: ratio >= 3 at batch 1 (compiled: the static decode step under torch.compile, warm)")

    times = per_token_times(mini, 1000)
    first, last = statistics.median(times[:100]) * 100, statistics.median(times[-100:]) * 100
    cache_rows = [
        {
            "mode": "kv cache",
            "ms/token ctx~64": 1e3 * first / 100,
            "ms/token ctx~1000": 1e3 * last / 100,
            "last/first": last / first,
        },
        {
            "mode": "no cache",
            "ms/token ctx~64": 1e3 * no_cache_step(mini, 64),
            "ms/token ctx~1000": 1e3 * no_cache_step(mini, 1000),
            "last/first": no_cache_step(mini, 1000) / no_cache_step(mini, 64),
        },
    ]
    print_table(cache_rows)
    print("goal: kv cache last/first <= 1.5")
    write_result("generate_speed", rows + cache_rows, {"shape": SHAPE, "new_tokens": args.new, "rounds": measured})


if __name__ == "__main__":
    main()
