"""One object that decides device, precision and seed for everything zoo runs.

Models never choose their device or dtype: they are built on the CPU in fp32 and the runtime
moves them, wraps forward passes in autocast, owns the GradScaler (fp16 only), optionally
compiles, and joins the torch.distributed process group when launched by ``torchrun``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from zoo import distributed
from zoo.errors import RuntimeConfigError
from zoo.quantization import check_method
from zoo.quantization import quantize as quantize_model
from zoo.specs import RuntimeSpec, validate

DTYPES = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicitly requested absent device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            index = int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1)
            return torch.device("cuda", index)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeConfigError(
                f"runtime.device = {name!r} but CUDA is not available on this machine "
                '(torch was built without CUDA or no GPU is visible); use device = "auto" or "cpu"'
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeConfigError(
                f"runtime.device = {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeConfigError('runtime.device = \'mps\' but MPS is not available; use "auto" or "cpu"')
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16-mixed"
        return "fp32"
    if precision == "fp16-mixed" and device.type == "cpu":
        raise RuntimeConfigError(
            "runtime.precision = 'fp16-mixed' is not supported on the CPU (no fp16 autocast "
            "kernels, no loss scaling); use 'bf16-mixed' or 'fp32'"
        )
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeConfigError("this GPU does not support bf16; use precision = 'fp16-mixed'")
    return precision


class Runtime:
    """Device, precision, seeding, autocast, loss scaling, compilation and distribution."""

    def __init__(self, spec: RuntimeSpec | None = None, **overrides: Any) -> None:
        spec = spec or RuntimeSpec()
        if overrides:
            spec = validate(RuntimeSpec, {**spec.model_dump(), **overrides}, "runtime")
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.precision = resolve_precision(spec.precision, self.device)
        self.seed = spec.seed

        self.dist = distributed.setup(spec.distributed, self.device)

    # ------------------------------------------------------------------ derived settings

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.precision)

    @property
    def inference_dtype(self) -> torch.dtype:
        """The dtype generation runs the weights in: the mixed-precision dtype (bf16 on a GPU by
        default), else fp32. Weights cast once run faster than fp32 weights under autocast, which
        casts every weight again at every step."""
        return self.autocast_dtype or torch.float32

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.dist.rank == 0

    def __repr__(self) -> str:
        return (
            f"Runtime(device={self.device}, precision={self.precision}, seed={self.seed}, world={self.dist.world_size})"
        )

    # ------------------------------------------------------------------ behaviour

    def seed_everything(self, offset: int = 0) -> None:
        """Seed Python and torch (every device) so CPU runs repeat exactly."""
        seed = self.seed + offset
        random.seed(seed)
        torch.manual_seed(seed)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Enabled only for fp16-mixed; bf16 and fp32 need no loss scaling."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16-mixed")

    def to_device(self, obj: Any) -> Any:
        """Move a tensor, or a tuple/list/dict of tensors, to the runtime's device."""
        if isinstance(obj, torch.Tensor):
            return obj.to(self.device, non_blocking=self.device.type == "cuda")
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.to_device(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.to_device(v) for k, v in obj.items()}
        return obj

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move the model to the device and return the module to call (compiled / DDP-wrapped).

        Keep a reference to the model you passed in: it is the one to save.
        """
        model.to(self.device)
        wrapped: nn.Module = self.dist.wrap(model, self.device)
        if self.spec.compile:
            wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        return wrapped

    def prepare_for_inference(self, model: nn.Module, quantize: str | None = None) -> nn.Module:
        """Move ``model`` to the device with its floating-point weights in `inference_dtype`, in
        place, in eval mode; returns it. For models the caller owns: zoo does this to a model it
        loads itself for `generate`, never to one it is handed. ``quantize="int8"``: int8 linear
        layers (`zoo.quantize`), which run on the CPU in fp32."""
        method = self.check_quantize(quantize)
        model.to(self.device, dtype=self.inference_dtype).eval()
        return quantize_model(model, method) if method is not None else model

    def check_quantize(self, quantize: str | None) -> str | None:
        """The quantization to apply (None for none), if this runtime can run it."""
        method = check_method(quantize)
        if method is not None and (self.device.type != "cpu" or self.precision != "fp32"):
            raise RuntimeConfigError(
                f"--quantize {method} runs on the CPU in fp32 (int8 kernels are CPU-only); this runtime is "
                f"{self.device} {self.precision}: use --device cpu --precision fp32"
            )
        return method

    @contextlib.contextmanager
    def inference(self, model: nn.Module | None = None) -> Iterator[None]:
        """No autograd, and autocast unless ``model``'s weights already are in the low-precision dtype."""
        cast = model is not None and next(model.parameters()).dtype == self.autocast_dtype
        with torch.inference_mode(), contextlib.nullcontext() if cast else self.autocast():
            yield
