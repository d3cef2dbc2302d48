"""`zoo serve` under load: continuous batching against a one-request-at-a-time server of the same
model, with a bounded asyncio client on 127.0.0.1.

For each model two servers run side by side (``--max-batch 16`` and ``--max-batch 1``, the same
code otherwise) and rounds alternate between them (batched, sequential, batched, ...): each round
16 clients send ``--requests`` streamed completions each (mixed prompt lengths and budgets, so
requests join and leave a running batch), and the figures are the median and range over rounds:
aggregate tokens/s, time to first token (p50 of the requests sent while all 16 clients run,
against a lone client on the batched server; the round's opening burst of 16 at once apart),
latency p50/p99, and errors. For reference, the same prompts decoded as one static batch
in-process: `zoo.generate`, and for the Hugging Face model transformers' own ``generate``. And
the ceiling HTTP cannot change: the same workload through the batcher alone, in-process (16
clients, ``max_batch`` 16 against 1, interleaved), which is what the model's own compute allows.

Models (random weights, built here; no network): ``minigpt-small`` and a 135M Llama shaped like
SmolLM2-135M (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49152), saved as a
local Hugging Face folder with a word-level tokenizer of 49152 entries.

    python bench/serve_load.py            # about ten minutes on a 2-core CPU
    python bench/serve_load.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, machine, print_table, spread, write_result

CLIENTS = 16
# requests per client per round: enough that the ramp-down at a round's end (the last requests
# finishing one by one, the batch emptying) is a small part of it (with 3 on the Llama it was
# about a sixth of a batched round); the Llama's sequential rounds take minutes
REQUESTS = {"minigpt-small": 16, "llama-135m": 6}
ALONE_ROUNDS = {"llama-135m": 1}  # the batcher alone at one row: three minutes a round on the Llama
WORDS = [
    "the",
    "zoo",
    "serves",
    "models",
    "to",
    "many",
    "clients",
    "at",
    "once",
    "and",
    "each",
    "one",
    "gets",
    "its",
    "own",
    "tokens",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_models(folder: Path, quick: bool) -> dict[str, Path]:
    """minigpt-small as a zoo artifact, and the 135M Llama as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    import zoo

    torch.manual_seed(0)
    zoo.save(zoo.build_model("minigpt-small"), folder / "minigpt-small")
    vocab = 49152
    words = {w: i for i, w in enumerate(["<pad>", "</s>", *WORDS])}
    words.update({f"w{i}": i for i in range(len(words), vocab)})
    raw = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>")
    llama = folder / "llama-135m"
    tok.save_pretrained(llama)
    shape = dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536)
    if quick:
        shape = dict(hidden_size=72, num_hidden_layers=2, intermediate_size=128)
    config = LlamaConfig(
        vocab_size=vocab,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=None,  # random weights: run every request to its budget
        bos_token_id=None,
        **shape,
    )
    LlamaForCausalLM(config).save_pretrained(llama)
    return {"minigpt-small": folder / "minigpt-small", "llama-135m": llama}


def workload(n: int, seed: int, max_tokens: int) -> list[dict[str, Any]]:
    """``n`` completions with prompts of 2 to 12 words and budgets of half to all of ``max_tokens``."""
    rng = random.Random(seed)
    return [
        {
            "prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))),
            "max_tokens": rng.randint(max_tokens // 2, max_tokens),
            "temperature": 0,
        }
        for _ in range(n)
    ]


async def one(http: httpx.AsyncClient, url: str, model: str, job: dict[str, Any]) -> dict[str, Any]:
    body = {**job, "model": model, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, tokens = None, 0
    try:
        async with http.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return {"error": r.status_code}
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif first is None:
                    first = time.perf_counter() - start
    except httpx.HTTPError as err:
        return {"error": type(err).__name__}
    return {"ttft": first, "latency": time.perf_counter() - start, "tokens": tokens}


async def load(url: str, model: str, jobs: list[dict[str, Any]], clients: int, timeout: float) -> dict[str, Any]:
    """``clients`` concurrent clients share ``jobs`` (each takes the next when done); bounded in count
    (the jobs) and time (``timeout``)."""
    queue = list(reversed(jobs))
    results: list[dict[str, Any]] = []

    async def client(http: httpx.AsyncClient) -> None:
        first = True
        while queue:
            results.append({**await one(http, url, model, queue.pop()), "first": first})
            first = False

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(clients))), timeout)
        wall = time.perf_counter() - start
    ok = [r for r in results if "error" not in r]
    # time to first token once every client runs: each client's first request arrives with all the
    # others' at the round's start (a burst of 16 prefills no steady load has), reported apart
    ttft = sorted(r["ttft"] for r in ok if r["ttft"] is not None and (clients == 1 or not r["first"]))
    burst = sorted(r["ttft"] for r in ok if r["ttft"] is not None and r["first"])
    latency = sorted(r["latency"] for r in ok)
    return {
        "tok/s": sum(r["tokens"] for r in ok) / wall,
        "ttft p50": statistics.median(ttft) if ttft else float("nan"),
        "ttft p50 burst": statistics.median(burst) if burst else float("nan"),
        "latency p50": statistics.median(latency) if latency else float("nan"),
        "latency p99": latency[min(len(latency) - 1, int(0.99 * len(latency)))] if latency else float("nan"),
        "errors": len(results) - len(ok),
        "requests": len(results),
    }


class Server:
    """``zoo serve TARGET`` in a subprocess on 127.0.0.1."""

    def __init__(self, target: Path, name: str, max_batch: int, threads: int, prefill: str = "auto") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "zoo", "serve", f"{name}={target}", "--port", str(self.port)]
        cmd += ["--max-batch", str(max_batch), "--max-queue", "256", "--log-level", "warning", "--prefill", prefill]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)

    def wait(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"zoo serve exited with {self.proc.returncode}")
            time.sleep(0.5)
        raise SystemExit("zoo serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def static_batches(target: Path, jobs: list[dict[str, Any]], hf: bool, rounds: int) -> dict[str, float]:
    """tokens/s of the same prompts as static batches of 16 in-process (zoo.generate; transformers)."""
    import torch

    import zoo

    model = zoo.open_model(str(target))
    zoo.Runtime(device="cpu").prepare_for_inference(model)
    tokenizer = zoo.tokenizer_of(model) or zoo.ByteTokenizer()
    # a static batch runs every row to the longest budget; only the tokens asked for count
    useful = sum(j["max_tokens"] for j in jobs)
    batches = [jobs[i : i + CLIENTS] for i in range(0, len(jobs), CLIENTS)]
    out: dict[str, list[float]] = {"zoo.generate static": [], "transformers generate static": []}
    for _ in range(rounds):
        start = time.perf_counter()
        for batch in batches:
            budget = max(j["max_tokens"] for j in batch)
            zoo.generate(model, tokenizer, [j["prompt"] for j in batch], "greedy", max_new_tokens=budget, eos_ids=[])
        out["zoo.generate static"].append(useful / (time.perf_counter() - start))
        if hf:
            start = time.perf_counter()
            with torch.inference_mode():
                for batch in batches:
                    ids, mask = left_padded([tokenizer.encode(j["prompt"]) for j in batch], tokenizer.pad_id)
                    budget = max(j["max_tokens"] for j in batch)
                    model.hf.generate(  # type: ignore[attr-defined]
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=budget,
                        min_new_tokens=budget,
                        do_sample=False,
                    )
            out["transformers generate static"].append(useful / (time.perf_counter() - start))
    return {k: statistics.median(v) if v else None for k, v in out.items()}  # None: no transformers model


def batcher_alone(target: Path, jobs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """The workload through `zoo.serving.batcher.Batcher` in-process, no HTTP: 16 clients (each sends
    its next request when the last one ends) on ``max_batch`` 16 and on 1, rounds interleaved."""
    import threading

    import zoo
    from zoo.lm.generation import resolve_sampler
    from zoo.serving.batcher import Batcher, Request, Update

    model = zoo.open_model(str(target))
    runtime = zoo.Runtime(device="cpu")
    runtime.prepare_for_inference(model)
    tokenizer = zoo.tokenizer_of(model) or zoo.ByteTokenizer()
    sampler = resolve_sampler("greedy", model, None)
    prompts = [(tokenizer.encode(j["prompt"]), j["max_tokens"]) for j in jobs]

    def run(max_batch: int) -> float:
        batcher = Batcher(model, tokenizer, runtime, max_batch=max_batch, max_queue=len(jobs))
        todo, lock, ended, tokens = list(reversed(prompts)), threading.Lock(), threading.Semaphore(0), [0]

        def send() -> None:  # the next job, as a client does when its last reply has ended
            with lock:
                if not todo:
                    return
                prompt, budget = todo.pop()

            def emit(update: Update) -> None:
                tokens[0] += update.token is not None
                if update.finish is not None:
                    send()
                    ended.release()

            batcher.submit(Request(prompt, sampler, budget, emit))

        batcher.start()
        start = time.perf_counter()
        for _ in range(CLIENTS):
            send()
        for _ in prompts:
            ended.acquire()
        rate = tokens[0] / (time.perf_counter() - start)
        batcher.close()
        return rate

    run(CLIENTS)  # warm-up
    pairs = [(run(CLIENTS), run(1)) for _ in range(rounds)]
    ratio = spread([b / s for b, s in pairs])
    return {
        "batcher alone B16 tok/s": statistics.median(b for b, _ in pairs),
        "batcher alone B1 tok/s": statistics.median(s for _, s in pairs),
        "batcher alone ratio": ratio["median"],
    }


def left_padded(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    import torch

    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :], mask[i, longest - len(p) :] = torch.tensor(p), 1
    return ids, mask


def bench_model(name: str, target: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds against the two servers of one model; one row of figures."""
    requests = args.requests or REQUESTS.get(name, 2)
    batched = Server(target, name, CLIENTS, args.threads, args.prefill)
    sequential = Server(target, name, 1, args.threads, args.prefill)
    try:
        batched.wait()
        sequential.wait()
        jobs = workload(CLIENTS * requests, 0, args.max_tokens)
        run = lambda server, clients, todo: asyncio.run(load(server.url, name, todo, clients, args.timeout))  # noqa: E731
        run(batched, CLIENTS, jobs[:CLIENTS])  # warm-up, unmeasured
        run(sequential, 1, jobs[:2])
        rounds: dict[str, list[dict[str, Any]]] = {"batched": [], "sequential": [], "lone": []}
        for r in range(args.rounds):
            print(f"{name}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            rounds["batched"].append(run(batched, CLIENTS, jobs))
            rounds["sequential"].append(run(sequential, CLIENTS, jobs))
            rounds["lone"].append(run(batched, 1, jobs[:requests]))
    finally:
        batched.stop()
        sequential.stop()
    med = lambda side, key: statistics.median(x[key] for x in rounds[side])  # noqa: E731
    ratios = [b["tok/s"] / s["tok/s"] for b, s in zip(rounds["batched"], rounds["sequential"], strict=True)]
    ratio = spread(ratios)
    statics = static_batches(target, jobs, name.startswith("llama"), max(1, args.rounds // 2))
    alone = batcher_alone(target, jobs, min(args.rounds, ALONE_ROUNDS.get(name, args.rounds)))
    return {
        "model": name,
        "batched tok/s": med("batched", "tok/s"),
        "sequential tok/s": med("sequential", "tok/s"),
        "ratio": ratio["median"],
        "ratio range": f"{ratio['min']:.2f}-{ratio['max']:.2f}",
        "ttft p50 (16 clients)": med("batched", "ttft p50"),
        "ttft p50 (lone)": med("lone", "ttft p50"),
        "ttft p50 (16 arriving at once)": med("batched", "ttft p50 burst"),
        "latency p50": med("batched", "latency p50"),
        "latency p99": med("batched", "latency p99"),
        "errors": sum(x["errors"] for side in rounds.values() for x in side),
        "requests per client": requests,
        **{f"{k} tok/s": v for k, v in statics.items()},
        **alone,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=None, help=f"requests per client per round (default: {REQUESTS})"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one round may take")
    parser.add_argument("--models", default="minigpt-small,llama-135m")
    parser.add_argument("--prefill", default="auto", choices=["auto", "thread", "inline"], help="zoo serve --prefill")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny Llama, one round")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per server (1: steady on a shared, loaded machine)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.requests, args.max_tokens = 1, args.requests or 1, 8
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = build_models(Path(tmp), args.quick)
        for name in args.models.split(","):
            rows.append(bench_model(name, targets[name], args))
    shown = [{k: v for k, v in r.items() if k != "rounds"} for r in rows]
    print_table(shown)
    if not args.quick:
        setup = {"clients": CLIENTS, "requests per client": args.requests or REQUESTS, "max_tokens": args.max_tokens}
        setup["threads"], setup["prefill"] = args.threads, args.prefill
        name = "serve_load" + (f"-threads-{args.threads}" if args.threads != 1 else "")
        name += f"-prefill-{args.prefill}" if args.prefill != "auto" else ""
        out = write_result(name, rows, {"setup": setup, "load": os.getloadavg()})
        print(f"wrote {out}")
    print(json.dumps(machine()))


if __name__ == "__main__":
    main()
