"""Fine-tuning one model two ways: every parameter vs LoRA adapters (`zoo train --lora`), the same
steps, batch and data, rounds interleaved (full, lora, full, lora, ...) in one process. Reports
trainable parameters, the size of one checkpoint and training tokens/s (median and spread).

    python bench/lora_speed.py [--rounds 3] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import SHAKESPEARE, print_table, write_result

MODEL = {"type": "minigpt", "vocab_size": 256, "d_model": 384, "n_layers": 6, "n_heads": 6, "max_seq_len": 128}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    import torch

    import zoo

    torch.set_num_threads(torch.get_num_threads())
    trainer = {
        "type": "causal-lm",
        "max_steps": args.steps,
        "batch_size": 8,
        "context": 128,
        "eval_every": 0,
        "eval_batches": 1,
        "checkpoint_every": args.steps,
        "keep_checkpoints": 1,
        "progress": False,
    }
    runs: dict[str, list[float]] = {"full": [], "lora": []}
    info: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        torch.manual_seed(0)
        zoo.save(zoo.build_model(MODEL), base)
        for r in range(args.rounds):
            for kind in ("full", "lora"):
                out = Path(tmp) / f"{kind}-{r}"
                start = time.perf_counter()
                zoo.train(trainer, out, init_from=base, data=SHAKESPEARE, lora=kind == "lora")
                seconds = time.perf_counter() - start
                runs[kind].append(args.steps * 8 * 128 / seconds)
                checkpoint = next((out / "checkpoints").iterdir())
                size = sum(f.stat().st_size for f in checkpoint.iterdir())
                model = zoo.load(out / "model")
                params = sum(p.numel() for p in model.parameters())
                adapters = out / "adapter" / "adapter_model.safetensors"
                trainable = params
                if kind == "lora":
                    from safetensors import safe_open

                    with safe_open(str(adapters), "pt") as fh:
                        trainable = sum(
                            fh.get_slice(k).get_shape()[0] * fh.get_slice(k).get_shape()[1]
                            for k in fh.keys()  # noqa: SIM118  (a safe_open handle, not a dict)
                        )
                info[kind] = {"params": params, "trainable": trainable, "checkpoint_mb": size / 2**20}
    rows = []
    for kind in ("full", "lora"):
        rates = runs[kind]
        rows.append(
            {
                "fine-tune": "all parameters (AdamW)" if kind == "full" else "LoRA r=8 on attn + mlp (AdamW)",
                "trainable": f"{int(info[kind]['trainable']):,} of {int(info[kind]['params']):,}",
                "checkpoint_mb": round(info[kind]["checkpoint_mb"], 2),
                "tok_s": round(statistics.median(rates)),
                "spread": f"{min(rates):.0f}-{max(rates):.0f}",
            }
        )
    ratio = {
        "checkpoint_ratio_full_over_lora": round(info["full"]["checkpoint_mb"] / info["lora"]["checkpoint_mb"], 1),
        "speed_ratio_lora_over_full": round(statistics.median(runs["lora"]) / statistics.median(runs["full"]), 2),
    }
    print_table(rows)
    print(ratio)
    write_result("lora_speed", rows, {"ratios": ratio, "rounds": args.rounds, "steps": args.steps, "model": MODEL})


if __name__ == "__main__":
    main()
