"""`make bench`: the CPU suite, one table of ratios measured side by side in one run.

Rows: `zoo list` cold start vs `import torch`; artifact load (safetensors) vs `torch.load` of the
same state dict; MiniGPT vs HF GPT2LMHeadModel training tokens/s and generation tokens/s (batch
1 and 8); registry build overhead vs direct construction; `zoo list` with 50 extra plugins.
Writes bench/results/suite.json and suite.md with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import machine, write_result  # noqa: E402

import zoo  # noqa: E402


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row(what: str, ours: float, theirs: float, unit: str, peer: str, higher_is_better: bool) -> dict:
    ratio = ours / theirs if higher_is_better else theirs / ours
    return {"what": what, "zoo": ours, "peer": theirs, "unit": unit, "peer is": peer, "zoo advantage": ratio}


def startup_rows(runs: int) -> list[dict]:
    import startup

    med = startup.measure(runs)
    rows = [row("cold start: `zoo list`", med["zoo list"], med["python -c 'import torch'"], "s", "import torch", False)]
    with tempfile.TemporaryDirectory() as tmp:
        from helpers import fake_plugin_site

        site = Path(tmp) / "site"
        fake_plugin_site(site)
        import os

        env_before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(site)
        try:
            many = startup.measure(runs)["zoo list"]
        finally:
            if env_before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = env_before
    rows.append(row("`zoo list` with 50 extra plugins", many, med["zoo list"], "s", "zoo list alone", False))
    return rows


def artifact_rows(reps: int) -> list[dict]:
    spec = {"type": "minigpt", "vocab_size": 50304, "d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 512}
    model = zoo.build_model(spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        art = zoo.save(model, Path(tmp) / "art")
        pt = Path(tmp) / "state.pt"
        torch.save(model.state_dict(), pt)
        from zoo.artifacts import read_tensors

        raw_st = median_time(lambda: read_tensors(art / "model.safetensors"), reps)
        raw_pt = median_time(lambda: torch.load(pt, weights_only=True), reps)
        rows.append(row("read weights (51M params)", raw_st, raw_pt, "s", "torch.load(weights_only)", False))

        def torch_way():
            m = zoo.build_model(spec)
            m.load_state_dict(torch.load(pt, weights_only=True))

        full = median_time(lambda: zoo.load(art), reps)
        base = median_time(torch_way, reps)
        rows.append(row("zoo.load (verify + rebuild)", full, base, "s", "build + torch.load + load_state_dict", False))
    return rows


def registry_rows(reps: int) -> list[dict]:
    from zoo_minigpt.model import MiniGPT

    spec_dict = {"type": "minigpt", "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128}
    spec = zoo.model_spec(spec_dict)
    via = median_time(lambda: zoo.build_model(spec_dict), reps)
    direct = median_time(lambda: MiniGPT(spec), reps)
    return [row("build minigpt-small via registry", via, direct, "s", "MiniGPT(spec) directly", False)]


def model_rows(rounds: int) -> list[dict]:
    import generate_speed
    import train_speed

    rows = []
    for r in train_speed.measure(train_speed.SHAPE, 16, rounds, 5):
        rows.append(
            row(
                f"train tok/s ({r['precision']})",
                r["minigpt tok/s"],
                r["hf gpt2 tok/s"],
                "tok/s",
                "HF GPT2LMHeadModel",
                True,
            )
        )
    mini, hf = generate_speed.build_pair()
    g = torch.Generator().manual_seed(0)
    for batch in (1, 8):
        prompts = torch.randint(0, 256, (batch, 32), generator=g).tolist()
        z = generate_speed.zoo_rate(mini, prompts, "greedy", 256, rounds)
        h = generate_speed.hf_rate(hf, prompts, {"do_sample": False}, 256, rounds)
        rows.append(row(f"generate tok/s, greedy, batch {batch}", z, h, "tok/s", "HF generate()", True))
    return rows


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        f"# zoo CPU benchmark suite, {info['date']}",
        "",
        f"{info['device']}, {info['cpu_threads']} threads, Python {info['python']}, torch {info['torch']}, "
        f"transformers {info.get('transformers', '-')}",
        "",
        "| what | zoo | peer | unit | peer is | zoo advantage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['zoo']:.4g} | {r['peer']:.4g} | {r['unit']} | {r['peer is']} | "
            f"{r['zoo advantage']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    args = parser.parse_args()
    n = 3 if args.quick else 5
    rows = startup_rows(n) + artifact_rows(n) + registry_rows(n) + model_rows(n)
    info = machine()
    text = markdown(rows, info)
    print(text)
    write_result("suite", rows)
    (HERE / "results" / "suite.md").write_text(text)


if __name__ == "__main__":
    main()
