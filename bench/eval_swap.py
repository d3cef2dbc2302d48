"""The swap, measured: MiniGPT, a Hugging Face GPT-2 (with its own BPE tokenizer) and zoo-example's
GRU, trained with one recipe on the first 90% of tiny Shakespeare, then scored on the held-out 10%
by one `zoo eval` command (bits per byte compares the byte-level and BPE models fairly).

    python bench/eval_swap.py [--steps 400]

Writes results/eval_swap.json, results/eval_swap.md (the table `zoo eval` printed) and
results/eval_swap.png (its bar chart).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SHAKESPEARE, machine

MODELS = {
    "minigpt": ("minigpt-small", None),
    "hf-gpt2": (
        {
            "type": "hf-causal-lm",
            "config": {
                "model_type": "gpt2",
                "n_layer": 4,
                "n_embd": 128,
                "n_head": 4,
                "vocab_size": 1024,
                "n_positions": 128,
            },
        },
        {"type": "bpe", "vocab_size": 1024},
    ),
    "gru": ("gru-lm-small", None),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    results = ROOT / "bench" / "results"
    zoo = [sys.executable, "-m", "zoo"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = SHAKESPEARE.read_bytes()
        cut = text.rfind(b"\n", 0, int(len(text) * 0.9)) + 1
        (work / "train.txt").write_bytes(text[:cut])
        (work / "heldout.txt").write_bytes(text[cut:])
        walls = {}
        for name, (model, tokenizer) in MODELS.items():
            trainer = {
                "type": "causal-lm",
                "max_steps": args.steps,
                "batch_size": 16,
                "context": 128,
                "lr": 2e-3,
                "schedule": {"name": "cosine", "warmup_steps": 20},
                "eval_every": 0,
                "progress": False,
                **({"tokenizer": tokenizer} if tokenizer else {}),
            }
            start = time.perf_counter()
            spec = model if isinstance(model, str) else json.dumps(model)
            train = ["train", "--model", spec, "--trainer", json.dumps(trainer), "--out", str(work / name)]
            subprocess.run([*zoo, *train, "--data", str(work / "train.txt"), "--device", "cpu"], check=True, cwd=work)
            walls[name] = round(time.perf_counter() - start, 1)
        command = ["eval", *MODELS, "--data", "heldout.txt", "--device", "cpu"]
        table = subprocess.run(
            [*zoo, *command, "--plot", str(results / "eval_swap.png")],
            cwd=work,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        scores = json.loads(
            subprocess.run([*zoo, *command, "--json"], cwd=work, check=True, capture_output=True, text=True).stdout
        )
    table = "".join(line + "\n" for line in table.splitlines() if not line.startswith("wrote "))
    print(table)
    (results / "eval_swap.md").write_text(f"$ zoo {' '.join(command)}\n{table}")
    payload = {"machine": machine(), "steps": args.steps, "train_wall_s": walls, "scores": scores}
    (results / "eval_swap.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
