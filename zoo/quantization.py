"""Int8 weights for CPU inference: ``zoo.quantize(model)``, ``--quantize int8``.

Every ``nn.Linear`` becomes torch's dynamically quantized linear layer (int8 weights, one scale
per output channel; activations quantized per call; fbgemm/x86 kernels). Chosen by measurement
on the 2-core development CPU, one cached decoding step of a 135M Llama (SmolLM2-135M's shape,
bench/quantize_backends.py): 2.4x fp32's speed, where torchao 0.18's Int8WeightOnly and
Int8DynamicActivationInt8Weight ran at 0.58x and 0.38x of fp32 (bench/README.md).

The output projection counts: at a 49,152-token vocabulary it is a fifth of a 135M model's
weights, read at every step. A head tied to the input embedding is quantized too: the layer gets
its own int8 copy and the embedding keeps the fp32 table (a lookup reads one row per token).

Weights transformers memory-maps from a ``.safetensors`` file are read once to quantize; each
layer's fp32 pages go back to the page cache as soon as its int8 copy exists (`_page_out`), so
the peak stays below fp32 decoding's, which keeps the whole file resident.

A quantized model is for inference only: training or saving it is refused (`refuse_quantized`;
export reads the fp32 artifact from disk); quantize the fp32 model again when you load it.
"""

from __future__ import annotations

import ctypes
import mmap
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.specs import QUANTIZE_METHODS as METHODS

BACKEND_NOTE = "torch.ao dynamic int8 (fbgemm, per-channel weights)"


def _dynamic_linear() -> Any:
    try:
        from torch.ao.nn.quantized.dynamic import Linear
    except ImportError:  # a torch without torch.ao's eager quantization
        raise ZooError(
            f"--quantize int8 needs torch's dynamic quantization; torch {torch.__version__} has none"
        ) from None
    return Linear


def is_quantized(model: nn.Module) -> bool:
    """True when any of ``model``'s layers holds int8 weights from `quantize`."""
    try:
        kind = _dynamic_linear()
    except ZooError:
        return False
    return any(isinstance(m, kind) for m in model.modules())


def refuse_quantized(model: nn.Module, what: str) -> None:
    """One clear error for ``what`` (training, saving, exporting) on a quantized model."""
    if is_quantized(model):
        raise ZooError(
            f"{what} needs the fp32 model: this one has int8 weights (quantized for inference only); "
            "use the model without --quantize / zoo.quantize"
        )


def check_method(method: str | None) -> str | None:
    """``method`` as a quantization to apply (None for none), or one error naming the choices."""
    if method is None or method == "none":
        return None
    if method not in METHODS:
        raise ZooError(f"quantize={method!r}: choose one of {', '.join(METHODS)}")
    return method


def quantize(model: nn.Module, method: str = "int8") -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers by int8-weight layers, in place, for CPU inference;
    returns ``model`` (in eval mode). The model must be fp32 on the CPU and have Linear layers."""
    if check_method(method) is None:
        return model
    if is_quantized(model):
        return model
    kind = _dynamic_linear()
    linears = [name for name, m in model.named_modules() if type(m) is nn.Linear]
    if not linears:
        raise ZooError(f"--quantize {method}: {type(model).__name__} has no nn.Linear layers to quantize")
    for name in linears:
        weight = model.get_submodule(name).weight
        if weight.device.type != "cpu":
            raise ZooError(
                f"--quantize {method} runs on the CPU (int8 kernels are CPU-only); the model is on {weight.device}: "
                "use --device cpu"
            )
        if weight.dtype != torch.float32:
            raise ZooError(f"--quantize {method} starts from fp32 weights; {name} is {weight.dtype} (use fp32)")
    from torch.ao.quantization import per_channel_dynamic_qconfig

    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # torch marks its eager quantization as moving to torchao; at 2.13 its kernels are the faster
        # CPU path here (see BACKEND_NOTE), so the notice is not the user's business
        warnings.simplefilter("ignore")
        mapped = _mapped_weight_files()
        for name in linears:  # one layer at a time: its fp32 weight is freed once replaced
            layer = model.get_submodule(name)
            assert isinstance(layer, nn.Linear)  # collected above
            layer.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, kind.from_float(layer))
            _page_out(layer.weight, mapped)
    return model


MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages now (clean file pages are dropped, never lost)


def _mapped_weight_files() -> list[tuple[int, int]]:
    """Address ranges of memory-mapped ``.safetensors`` files (transformers maps the weights it
    loads); empty where /proc/self/maps does not exist."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[-1].endswith(".safetensors"):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def _page_out(weight: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Hand the pages of a quantized layer's fp32 weight back to the page cache when they are a
    mapped weights file: reading every byte to quantize made the whole file resident, beside the
    int8 copies, above fp32's own peak. MADV_PAGEOUT only drops clean file pages (a page some
    tensor changed stays), so nothing is lost; a later read faults the page in again."""
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not any(lo <= start and end <= hi for lo, hi in mapped):
        return
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor
    if last > first:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_PAGEOUT)  # a hint: errors ignored


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take: parameters and buffers, int8 weights at one byte each."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    kind = _dynamic_linear() if is_quantized(model) else None
    for m in model.modules():
        if kind is not None and isinstance(m, kind):
            w, b = m._packed_params._weight_bias()
            total += w.numel() * w.element_size() + (b.numel() * b.element_size() if b is not None else 0)
    return total
