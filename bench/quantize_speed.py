"""`--quantize int8` on the CPU: zoo's int8 decoding against transformers' fp32 `generate()`.

Speed: a Llama of SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536,
vocabulary 49,152, tied head; random weights: speed does not depend on them) saved as a Hugging
Face folder; zoo opens it the way `zoo generate FOLDER --quantize int8` does, transformers with
`from_pretrained`. Batch 1, greedy, a 32-token prompt, rounds interleaved in one process (zoo int8,
transformers fp32, zoo fp32, ...) after a warm-up round: medians, spreads and the median of the
round-by-round ratios.

Memory: each side in a fresh process (open the folder, quantize if int8, generate 16 tokens), its
peak resident set (``VmHWM``), rounds interleaved; the median.

Accuracy: bits per byte of a model that predicts something (random weights predict a near-uniform
distribution, whatever the rounding): a Llama of the same width (576, 9/3 heads, MLP 1536) with 2
layers and a byte vocabulary, trained briefly by `zoo train` on the first 90% of tiny
Shakespeare, scored by `zoo.evaluate(..., quantize="int8")` (what `zoo eval --quantize int8`
prints) on the last 10%. The 135M model's random-weight bits per byte are reported beside it.

    python bench/quantize_speed.py [--rounds 5] [--new 48] [--steps 150]

Goals (issue 24): int8 batch-1 greedy >= 2x transformers fp32; bits per byte within 2% of fp32;
peak memory at or below fp32's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, fmt_range, interleave, paired_ratio, print_table, write_result

import zoo
from zoo.quantization import BACKEND_NOTE, weight_bytes

SMOL = {
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
SMALL = {**SMOL, "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 256}
PROMPT = 32

PEAK = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
side, folder, new = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch
ids = torch.randint(0, 49152, (1, 32), generator=torch.Generator().manual_seed(0))
if side == "transformers fp32":
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False, pad_token_id=0)
else:
    import zoo
    zoo.generate(folder, None, [ids[0].tolist()], "greedy", max_new_tokens=new, eos_ids=[],
                 quantize="int8" if side == "zoo int8" else None)
# VmHWM: this process's own high-water mark (ru_maxrss keeps the parent's across fork + exec)
with open("/proc/self/status") as fh:
    print(json.dumps({"peak_mb": next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024}))
"""


def make_folder(folder: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**SMOL)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def zoo_side(folder: Path, quantize: str | None, prompt: list[int], new: int) -> tuple[Callable[[], float], object]:
    """Opened once, as `zoo generate FOLDER [--quantize int8]` opens it; each call: tok/s."""
    runtime = zoo.Runtime(device="cpu", precision="fp32")
    model = runtime.prepare_for_inference(zoo.open_model(folder, zoo.default_config()), quantize)

    def call() -> float:
        start = time.perf_counter()
        zoo.generate(model, None, [prompt], "greedy", max_new_tokens=new, eos_ids=[], runtime=runtime)
        return new / (time.perf_counter() - start)

    return call, model


def hf_side(folder: Path, prompt: list[int], new: int) -> Callable[[], float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    ids = torch.tensor([prompt])

    def call() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False
            )
        assert out.shape[1] == PROMPT + new
        return new / (time.perf_counter() - start)

    return call


def peaks(folder: Path, new: int, rounds: int) -> dict[str, list[float]]:
    """Peak RSS (MB) of each side in a fresh process per round, rounds interleaved."""
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for side in ("zoo int8", "transformers fp32", "zoo fp32"):
            res = subprocess.run(
                [sys.executable, "-c", PEAK, side, str(folder), str(new)], capture_output=True, text=True, check=True
            )
            out.setdefault(side, []).append(json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"])
    return out


def trained_scores(work: Path, steps: int) -> list[zoo.Score]:
    """fp32 and int8 rows of `zoo eval --quantize int8` for a briefly trained Llama of SMOL's width."""
    text = SHAKESPEARE.read_bytes()
    cut = text.rfind(b"\n", 0, int(len(text) * 0.9)) + 1
    (work / "train.txt").write_bytes(text[:cut])
    (work / "heldout.txt").write_bytes(text[cut:])
    trainer = {
        "type": "causal-lm",
        "max_steps": steps,
        "batch_size": 8,
        "context": 128,
        "lr": 2e-3,
        "schedule": {"name": "cosine", "warmup_steps": min(20, steps // 5)},
        "eval_every": 0,
        "progress": False,
    }
    model = {"type": "hf-causal-lm", "config": SMALL}
    cmd = ["train", "--model", json.dumps(model), "--trainer", json.dumps(trainer), "--out", str(work / "small")]
    subprocess.run(
        [sys.executable, "-m", "zoo", *cmd, "--data", str(work / "train.txt"), "--device", "cpu"], check=True
    )
    return zoo.evaluate(
        [work / "small"], work / "heldout.txt", runtime=zoo.Runtime(device="cpu"), context=128, quantize="int8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new", type=int, default=48, help="new tokens per generation")
    parser.add_argument("--steps", type=int, default=150, help="training steps of the bits-per-byte model")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prompt = torch.randint(0, SMOL["vocab_size"], (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_folder(work / "smol")
        int8, int8_model = zoo_side(folder, "int8", prompt, args.new)
        fp32, fp32_model = zoo_side(folder, None, prompt, args.new)
        calls = {"zoo int8": int8, "transformers fp32": hf_side(folder, prompt, args.new), "zoo fp32": fp32}
        tok_s = interleave(calls, args.rounds)
        print("speed:", {k: [round(x, 2) for x in v] for k, v in tok_s.items()}, file=sys.stderr, flush=True)
        same = zoo.generate(int8_model, None, [prompt], "greedy", max_new_tokens=args.new, eos_ids=[]).ids
        want = zoo.generate(fp32_model, None, [prompt], "greedy", max_new_tokens=args.new, eos_ids=[]).ids
        sizes = {"zoo int8": weight_bytes(int8_model) / 1e6}
        sizes["transformers fp32"] = sizes["zoo fp32"] = weight_bytes(fp32_model) / 1e6
        del int8_model, fp32_model, calls, int8, fp32
        peak = peaks(folder, min(args.new, 16), 3)  # memory, not speed: a few tokens do
        print("peak MB:", peak, file=sys.stderr, flush=True)
        scores = trained_scores(work, args.steps)
        random_bpb = zoo.evaluate(
            [folder], work / "heldout.txt", runtime=zoo.Runtime(device="cpu"), context=128, max_bytes=2048,
            quantize="int8",
        )  # fmt: skip
    hf = tok_s["transformers fp32"]
    rows = []
    for side in calls_order():
        ratio = paired_ratio(tok_s[side], hf, higher_is_better=True)
        rows.append(
            {
                "side": side,
                "tok/s": statistics.median(tok_s[side]),
                "tok/s spread": [min(tok_s[side]), max(tok_s[side])],
                "x transformers": ratio["median"],
                "ratio spread": fmt_range(ratio),
                "weights_mb": sizes[side],
                "peak_rss_mb": statistics.median(peak[side]),
                "peak spread": [min(peak[side]), max(peak[side])],
            }
        )
    bpb = []
    for name, rows_ in (("trained 2-layer, width 576", scores), ("135M, random weights", random_bpb)):
        fp, q = (s.metrics["bits_per_byte"] for s in rows_)
        bpb.append({"model": name, "fp32 bits/byte": fp, "int8 bits/byte": q, "change %": 100 * (q / fp - 1)})
    speed = rows[0]
    goals = {
        "speed_2x": speed["x transformers"] >= 2,
        "bpb_within_2pct": abs(bpb[0]["change %"]) <= 2,
        "peak_at_or_below_fp32": speed["peak_rss_mb"] <= rows[1]["peak_rss_mb"],
        f"greedy_tokens_equal_to_fp32_of_{args.new}": sum(a == b for a, b in zip(same[0], want[0], strict=True)),
    }
    print_table(rows)
    print_table(bpb)
    print(json.dumps(goals))
    write_result(
        "quantize_speed",
        rows + bpb,
        {
            "shape": SMOL,
            "new_tokens": args.new,
            "prompt_tokens": PROMPT,
            "backend": BACKEND_NOTE,
            "goals": goals,
            "rounds": tok_s,
            "peak_rounds": peak,
            "train_steps": args.steps,
        },
    )


def calls_order() -> tuple[str, ...]:
    return ("zoo int8", "transformers fp32", "zoo fp32")


if __name__ == "__main__":
    main()
