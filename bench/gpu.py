"""The GPU check and benchmark, one prepared script for the lent GPU machine (fits in 5 minutes).

    python bench/gpu.py              # on a CUDA machine: GPT-2-small shape, bf16
    python bench/gpu.py --dry-run    # anywhere: tiny shapes on the CPU (CI runs this)

Measures side by side in one run and prints one table headed by the device name: training
tokens/s, MFU (nanoGPT's 6N + 12*L*H*Q*T FLOPs per token against 989 TFLOP/s dense bf16) and peak
memory for MiniGPT (eager, torch.compile), HF GPT2LMHeadModel (eager, torch.compile) and `zoo
train --compile` itself (the engine, from its own metrics.jsonl); an fp16-mixed GradScaler run
(real fp16 on the CPU too); greedy decoding (32-token prompt, 256 new tokens, warm) at batch 1 and
16 through zoo's loop (fp32 weights under autocast; weights in the inference dtype, dynamic and
compiled, which on CUDA is a CUDA graph), a hand-captured CUDA graph, and HF generate(). Writes
bench/results/gpu.json (gpu-dry-run.json with --dry-run).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, machine, print_table, write_result

import zoo
from zoo.lm.generation import generate
from zoo.lm.tokenizers import ByteTokenizer
from zoo.training import train_from_config

PEAK_BF16 = 989e12  # H100/H200 dense bf16 FLOP/s
GPT2 = {"vocab_size": 50304, "d_model": 768, "n_layers": 12, "n_heads": 12, "max_seq_len": 1024}
TINY = {"vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 128}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pair(shape: dict[str, int], device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    from train_speed import build_pair

    mini, hf = build_pair(shape)  # identical shapes, GPT-2's gelu_new on both sides
    return mini.to(device), hf.to(device)


def flops_per_token(model: torch.nn.Module, shape: dict[str, int]) -> float:
    n = sum(p.numel() for p in model.parameters()) - shape["max_seq_len"] * shape["d_model"]  # nanoGPT: no wpe
    L, H, T = shape["n_layers"], shape["n_heads"], shape["max_seq_len"]
    return 6 * n + 12 * L * H * (shape["d_model"] // H) * T


def train_rate(
    model: torch.nn.Module,
    is_hf: bool,
    shape: dict,
    batch: int,
    steps: int,
    device: torch.device,
    dtype: torch.dtype | None,
    compile: bool,
) -> dict[str, float]:
    fn = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    T = shape["max_seq_len"]
    ids = torch.randint(0, shape["vocab_size"], (batch, T + 1), device=device)
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def step() -> None:
        with amp:
            out = fn(ids[:, :-1])
            logits = out.logits if is_hf else out[0]
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3):  # warm up (and compile)
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    rate = steps * batch * T / seconds
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"tok/s": rate, "mfu": rate * flops_per_token(model, shape) / PEAK_BF16, "peak GiB": peak}


def engine_rate(shape: dict, batch: int, steps: int, device: torch.device, compile: bool) -> dict[str, float]:
    """`zoo train` itself (the engine: sampling, autocast, clipping, fused AdamW, logging), its
    tokens/s from its own metrics.jsonl over the steps after the first log interval (warm-up and
    compilation excluded)."""
    cfg = zoo.default_config()
    runtime = {
        "device": device.type,
        "precision": "bf16-mixed" if device.type == "cuda" else "fp32",
        "compile": compile,
    }
    cfg = dataclasses.replace(cfg, runtime=cfg.runtime.model_copy(update=runtime))
    model = {"type": "minigpt", **shape, "activation": "gelu_tanh"}
    every = max(1, steps // 2)
    trainer = {
        "type": "causal-lm",
        "max_steps": 2 * every,
        "batch_size": batch,
        "context": shape["max_seq_len"],
        "log_every": every,
        "eval_every": 0,
        "eval_batches": 1,
        "checkpoint_every": 0,
        "progress": False,
    }
    text = SHAKESPEARE if SHAKESPEARE.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        data = text or Path(tmp) / "corpus.txt"
        if text is None:
            Path(data).write_text("the quick brown fox jumps over the lazy dog. " * 20000)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train_from_config(cfg, model, trainer, Path(tmp) / "run", data=str(data))
        records = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rate = [r for r in records if r.get("split") == "train" and "tokens_per_s" in r][-1]["tokens_per_s"]
    built = zoo.build_model(model)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"tok/s": rate, "mfu": rate * flops_per_token(built, shape) / PEAK_BF16, "peak GiB": peak}


class GraphedDecoder:
    """MiniGPT's static decode step captured once as a CUDA graph and replayed per token."""

    def __init__(self, model: Any, batch: int, max_len: int, dtype: torch.dtype) -> None:
        dev = next(model.parameters()).device
        self.model, self.cache = model, model.new_cache(batch, max_len, dtype=dtype)
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.cpos = torch.zeros(1, dtype=torch.long, device=dev)
        self.mask = torch.ones(batch, max_len, dtype=torch.long, device=dev)
        self.graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.autocast("cuda", dtype=dtype):
            for _ in range(2):
                model.decode_step(self.token, self.cache, self.mask, self.pos, self.cpos)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(self.graph), torch.autocast("cuda", dtype=dtype):
            self.logits = model.decode_step(self.token, self.cache, self.mask, self.pos, self.cpos)

    def generate(self, prompt: torch.Tensor, new: int) -> torch.Tensor:
        P = prompt.shape[1]
        self.cache.reset()
        with torch.autocast("cuda", dtype=self.cache.k[0].dtype):
            logits, _ = self.model(prompt, self.cache)
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = [nxt]
        for t in range(new - 1):
            self.token.copy_(nxt)
            self.pos.fill_(P + t)
            self.cpos.fill_(P + t)
            self.graph.replay()
            nxt = self.logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
        return torch.cat(out, 1)


def decode_rates(
    mini: Any, hf: Any, device: torch.device, dtype: torch.dtype | None, new: int, batch: int
) -> dict[str, float]:
    tok = ByteTokenizer()
    prompt = torch.randint(0, 256, (batch, 32), device=device)
    runtime = zoo.Runtime(device=str(device), precision="bf16-mixed" if dtype == torch.bfloat16 else "fp32")
    cast = copy.deepcopy(mini).to(runtime.inference_dtype).eval()  # what `zoo generate` decodes with
    rates: dict[str, float] = {}

    def timed(name: str, fn: Any) -> None:
        fn()  # warm (the first call compiles / captures)
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        rates[name] = batch * new / (time.perf_counter() - start)

    def zoo_gen(model: Any, **kw: Any) -> Any:
        return lambda: generate(model, tok, prompt.tolist(), "greedy", max_new_tokens=new, runtime=runtime, **kw)

    mini.eval()
    hf.eval()
    timed("zoo, fp32 weights + autocast (dynamic cache)", zoo_gen(mini))
    timed("zoo, inference dtype (dynamic cache)", zoo_gen(cast))
    timed("zoo, inference dtype, --compile", zoo_gen(cast, compile=True))
    if device.type == "cuda":
        graphed = GraphedDecoder(mini, batch, 32 + new, dtype or torch.float32)
        with torch.inference_mode():
            timed("hand-captured CUDA graph (autocast)", lambda: graphed.generate(prompt, new))
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def hf_gen() -> None:
        with torch.inference_mode(), amp:
            hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
            )

    timed("hf generate()", hf_gen)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (checks the script)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    shape = GPT2 if cuda else TINY
    batch, steps, new = (args.batch, args.steps, 256) if cuda else (2, 2, 16)
    dtype = torch.bfloat16 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    mini, hf = pair(shape, device)
    precision = "bf16-mixed" if cuda else "fp32"
    rows: list[dict[str, Any]] = []

    def add(what: str, prec: str, r: dict[str, float]) -> None:
        rows.append({"what": what, "precision": prec, **r})
        print(rows[-1], flush=True)

    for name, model, is_hf, comp in (
        ("train: minigpt eager", mini, False, False),
        ("train: hf gpt2 eager", hf, True, False),
        ("train: minigpt compiled", mini, False, True),
        ("train: hf gpt2 compiled", hf, True, True),
    ):
        add(name, precision, train_rate(model, is_hf, shape, batch, steps, device, dtype, comp))
    # compiled on CUDA (the goal's path); on the CPU dry run compiling would only cost CI a minute
    engine = "train: zoo train --compile (engine)" if cuda else "train: zoo train (engine)"
    add(engine, precision, engine_rate(shape, batch, steps, device, compile=cuda))
    # fp16 autocast + GradScaler also run on the CPU, so the dry run exercises the real fp16 path
    fp16 = train_rate(mini, False, shape, batch, max(2, steps // 4), device, torch.float16, False)
    add("train: minigpt eager (fp16 + GradScaler)", "fp16-mixed", fp16)
    for b in (1, 16 if cuda else 2):
        dec = decode_rates(mini, hf, device, dtype, new, b)
        for name, rate in dec.items():
            add(f"decode batch {b}: {name}", precision, {"tok/s": rate, "vs hf": rate / dec["hf generate()"]})
    info = machine()
    print(f"\n{info['device']} (torch {info['torch']}), {'GPT-2 small' if cuda else 'tiny dry-run'} shape {shape}")
    print_table(rows)
    print("goals: MFU >= 0.45 via zoo train --compile (floor 0.40), peak memory <= HF's; >= 3,000 new tok/s at batch 1")
    write_result("gpu-dry-run" if args.dry_run else "gpu", rows, {"shape": shape, "batch": batch})


if __name__ == "__main__":
    main()
