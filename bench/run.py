"""`make bench`: the CPU suite, one table of ratios measured side by side in one run.

Rows: `zoo list` cold start vs `import torch`; reading an artifact's weights (safetensors) vs
`torch.load(mmap=True)` of the same state dict, both lazy, then both touching every byte;
`zoo.load` vs build + `torch.load` + `load_state_dict`; MiniGPT vs HF GPT2LMHeadModel training
tokens/s and generation tokens/s (batch 1 and 8); registry build overhead vs direct construction;
`zoo list` with 50 extra plugins. Every row interleaves its rounds (zoo, peer, zoo, peer, ...) and
reports each side's median and spread and the median of the round-by-round ratios with its range.
Writes bench/results/suite.json and suite.md with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import interleave, machine, paired_ratio, spread, timed, write_result  # noqa: E402

import zoo  # noqa: E402


def row(what: str, ours: list[float], theirs: list[float], unit: str, peer: str, higher_is_better: bool) -> dict:
    """One table row from interleaved measurements of both sides (same rounds, same order)."""
    z, p, ratio = spread(ours), spread(theirs), paired_ratio(ours, theirs, higher_is_better)
    return {
        "what": what,
        "zoo": z["median"],
        "peer": p["median"],
        "unit": unit,
        "peer is": peer,
        "zoo advantage": ratio["median"],
        "zoo spread": [z["min"], z["max"]],
        "peer spread": [p["min"], p["max"]],
        "advantage spread": [ratio["min"], ratio["max"]],
        "rounds": len(ours),
    }


def startup_rows(runs: int) -> list[dict]:
    import startup

    times = startup.rounds(runs)
    rows = [
        row("cold start: `zoo list`", times["zoo list"], times["python -c 'import torch'"], "s", "import torch", False)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        from helpers import fake_plugin_site

        site = Path(tmp) / "site"
        fake_plugin_site(site)
        alone = [sys.executable, "-m", "zoo", "list"]
        many = {**os.environ, "PYTHONPATH": str(site)}
        pair = {
            "many": lambda: startup.wall(alone, env=many),
            "alone": lambda: startup.wall(alone),
        }
        times = interleave(pair, runs)
    rows.append(row("`zoo list` with 50 extra plugins", times["many"], times["alone"], "s", "zoo list alone", False))
    return rows


def artifact_rows(reps: int) -> list[dict]:
    spec = {"type": "minigpt", "vocab_size": 50304, "d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 512}
    model = zoo.build_model(spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        art = zoo.save(model, Path(tmp) / "art")
        pt = Path(tmp) / "state.pt"
        torch.save(model.state_dict(), pt)
        from zoo.storage import read_tensors

        # like with like: both map the file lazily; then both read every byte of every tensor
        def zoo_read() -> dict[str, torch.Tensor]:
            return read_tensors(art / "model.safetensors")

        def torch_read() -> dict[str, torch.Tensor]:
            return torch.load(pt, weights_only=True, mmap=True)

        def touched(read):
            return lambda: sum(float(t.sum()) for t in read().values())

        lazy = interleave({"zoo": timed(zoo_read), "torch": timed(torch_read)}, reps)
        rows.append(
            row("read weights, lazy (51M params)", lazy["zoo"], lazy["torch"], "s", "torch.load(mmap=True)", False)
        )
        full = interleave({"zoo": timed(touched(zoo_read)), "torch": timed(touched(torch_read))}, reps)
        rows.append(
            row("read weights + touch every byte", full["zoo"], full["torch"], "s", "torch.load(mmap=True)", False)
        )

        def torch_way() -> None:
            m = zoo.build_model(spec)
            m.load_state_dict(torch.load(pt, weights_only=True))

        load = interleave({"zoo": timed(lambda: zoo.load(art)), "torch": timed(torch_way)}, reps)
        rows.append(
            row(
                "zoo.load (verify + rebuild)",
                load["zoo"],
                load["torch"],
                "s",
                "build + torch.load + load_state_dict",
                False,
            )
        )
    return rows


def registry_rows(reps: int) -> list[dict]:
    from zoo_minigpt.model import MiniGPT

    spec_dict = {"type": "minigpt", "vocab_size": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "max_seq_len": 128}
    spec = zoo.model_spec(spec_dict)
    times = interleave({"via": timed(lambda: zoo.build_model(spec_dict)), "direct": timed(lambda: MiniGPT(spec))}, reps)
    return [
        row("build minigpt-small via registry", times["via"], times["direct"], "s", "MiniGPT(spec) directly", False)
    ]


def model_rows(rounds: int) -> list[dict]:
    import generate_speed
    import train_speed

    rows = []
    for r in train_speed.measure(train_speed.SHAPE, 16, rounds, 5):
        rates = r["rounds"]
        rows.append(
            row(
                f"train tok/s ({r['precision']})",
                rates["minigpt"],
                rates["hf-gpt2"],
                "tok/s",
                "HF GPT2LMHeadModel",
                True,
            )
        )
    mini, hf = generate_speed.build_pair()
    g = torch.Generator().manual_seed(0)
    for batch in (1, 8):
        prompts = torch.randint(0, 256, (batch, 32), generator=g).tolist()
        rates = generate_speed.rates(
            {
                "zoo": generate_speed.zoo_call(mini, prompts, "greedy", 256),
                "hf": generate_speed.hf_call(hf, prompts, {"do_sample": False}, 256),
            },
            rounds,
        )
        rows.append(
            row(f"generate tok/s, greedy, batch {batch}", rates["zoo"], rates["hf"], "tok/s", "HF generate()", True)
        )
    return rows


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        f"# zoo CPU benchmark suite, {info['date']}",
        "",
        f"{info['device']}, {info['cpu_threads']} threads, Python {info['python']}, torch {info['torch']}, "
        f"transformers {info.get('transformers', '-')}",
        "",
        "Rounds interleaved (zoo, peer, zoo, peer, ...); medians, [min-max] over the rounds; the advantage",
        "is the median of the round-by-round ratios.",
        "",
        "| what | zoo | peer | unit | peer is | zoo advantage |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        (zlo, zhi), (plo, phi), (alo, ahi) = r["zoo spread"], r["peer spread"], r["advantage spread"]
        lines.append(
            f"| {r['what']} | {r['zoo']:.4g} [{zlo:.3g}-{zhi:.3g}] | {r['peer']:.4g} [{plo:.3g}-{phi:.3g}] | "
            f"{r['unit']} | {r['peer is']} | {r['zoo advantage']:.2f}x [{alo:.2f}-{ahi:.2f}] |"
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
