"""Loading a saved model: `zoo.load(artifact)` against transformers' `from_pretrained(folder)` of the
same weights, each in a fresh process (so the page cache is warm for both but nothing else is
shared), rounds interleaved zoo, hf, zoo, hf, ... Reports the median seconds of the load call and
the peak resident memory the load added, with their spread.

    python bench/load_speed.py [--rounds 5] [--layers 6] [--width 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_table, write_result

PROBE = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
import torch, zoo
from transformers import AutoModelForCausalLM
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
before = rss_mb()
start = time.perf_counter()
if kind == "zoo":
    model = zoo.load(path)
else:
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "added_mb": peak - before, "params": sum(p.numel() for p in model.parameters())}))
"""


def probe(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()

    import torch

    import zoo

    config = {"model_type": "gpt2", "n_layer": args.layers, "n_embd": args.width, "n_head": 8, "vocab_size": 50257}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = zoo.build_model({"type": "hf-causal-lm", "config": config})
        folder, artifact = Path(tmp) / "hf", Path(tmp) / "artifact"
        model.hf.save_pretrained(folder)
        zoo.save(model, artifact)
        size_mb = (folder / "model.safetensors").stat().st_size / 2**20
        runs: dict[str, list[dict[str, float]]] = {"zoo": [], "hf": []}
        for _ in range(args.rounds):
            for kind, path in (("zoo", artifact), ("hf", folder)):
                runs[kind].append(probe(kind, path))
        for kind, label in (("zoo", "zoo.load(artifact)"), ("hf", "AutoModelForCausalLM.from_pretrained")):
            secs = [r["seconds"] for r in runs[kind]]
            mem = [r["added_mb"] for r in runs[kind]]
            rows.append(
                {
                    "loader": label,
                    "params_m": round(runs[kind][0]["params"] / 1e6, 1),
                    "weights_mb": round(size_mb),
                    "median_s": round(statistics.median(secs), 3),
                    "spread_s": f"{min(secs):.3f}-{max(secs):.3f}",
                    "peak_added_mb": round(statistics.median(mem)),
                }
            )
    zoo_s, hf_s = rows[0]["median_s"], rows[1]["median_s"]
    ratio = {"time_ratio_zoo_over_hf": round(zoo_s / hf_s, 2)}
    ratio["rss_ratio_zoo_over_hf"] = round(rows[0]["peak_added_mb"] / max(rows[1]["peak_added_mb"], 1), 2)
    print_table(rows)
    print(ratio)
    write_result("load_speed", rows, {"ratios": ratio, "rounds": args.rounds, "config": config})


if __name__ == "__main__":
    main()
