"""Which int8 path `zoo.quantize` uses: the candidates on the 135M Llama of quantize_speed.py.

One decoding step at batch 1 (a 32-token prompt in the KV cache, then one token at a time), as
ms per token, rounds interleaved over the candidates: fp32; torch's dynamic int8 linear layers
(``torch.ao.quantization``, fbgemm kernels), per-tensor and per-channel weight scales, with and
without the output head; torchao's ``Int8WeightOnlyConfig`` and
``Int8DynamicActivationInt8WeightConfig`` when torchao is installed (``pip install --no-deps
torchao``: it must not bring another torch). Beside each, how far its logits are from fp32's on
one random batch (mean |difference| / std of fp32's logits).

    python bench/quantize_backends.py [--rounds 3] [--steps 8]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_result
from quantize_speed import SMOL

warnings.simplefilter("ignore")  # torch.ao's notice that eager quantization moves to torchao


def torch_ao(per_channel: bool, head: bool) -> Callable[[nn.Module], nn.Module]:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig

    def apply(model: nn.Module) -> nn.Module:
        names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and (head or n != "lm_head")}
        return quantize_dynamic(model, dict.fromkeys(names, qconfig), dtype=torch.qint8)

    return apply


def with_torchao(config_name: str) -> Callable[[nn.Module], nn.Module]:
    def apply(model: nn.Module) -> nn.Module:
        import torchao.quantization as tq

        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())  # untie: the head too
        tq.quantize_(model, getattr(tq, config_name)())
        return model

    return apply


def step_ms(model: nn.Module, steps: int) -> float:
    """Median ms of one cached decoding step at batch 1."""
    ids = torch.randint(0, SMOL["vocab_size"], (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            out = model(nxt, past_key_values=cache, use_cache=True)
            cache, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SMOL)).eval()
    candidates: dict[str, Callable[[nn.Module], nn.Module]] = {
        "torch.ao dynamic int8, per-channel (zoo)": torch_ao(True, True),
        "torch.ao dynamic int8, per-tensor": torch_ao(False, True),
        "torch.ao dynamic int8, per-channel, fp32 head": torch_ao(True, False),
    }
    try:
        import torchao

        candidates[f"torchao {torchao.__version__} Int8WeightOnly"] = with_torchao("Int8WeightOnlyConfig")
        candidates[f"torchao {torchao.__version__} Int8DynamicActivationInt8Weight"] = with_torchao(
            "Int8DynamicActivationInt8WeightConfig"
        )
    except ImportError:
        print("torchao is not installed: its rows are left out", file=sys.stderr)
    models = {"fp32": base, **{name: make(copy.deepcopy(base)) for name, make in candidates.items()}}
    x = torch.randint(0, SMOL["vocab_size"], (1, 64), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = base(x).logits
        error = {name: float((m(x).logits - want).abs().mean() / want.std()) for name, m in models.items()}
    ms: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):  # interleaved: every candidate once per round
        for name, model in models.items():
            ms[name].append(step_ms(model, args.steps))
            print(name, round(ms[name][-1], 1), "ms/token", file=sys.stderr, flush=True)
    fp32 = statistics.median(ms["fp32"])
    rows = [
        {
            "candidate": name,
            "ms/token": statistics.median(v),
            "spread": [min(v), max(v)],
            "x fp32 speed": fp32 / statistics.median(v),
            "logit error": error[name],
        }
        for name, v in ms.items()
    ]
    print_table(rows)
    write_result("quantize_backends", rows, {"shape": SMOL, "rounds": ms, "steps": args.steps})


if __name__ == "__main__":
    main()
