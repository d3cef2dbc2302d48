"""LoRA adapters in peft's file layout: what a LoRA run writes, and what `--init-from` and
`zoo.open_model` read (zoo-made or peft-made).

A folder holds ``adapter_config.json`` (peft's `LoraConfig` fields) and
``adapter_model.safetensors`` (``base_model.model.PATH.lora_A.weight`` (r, in) and
``...lora_B.weight`` (out, r) per adapted layer), so ``peft.PeftModel.from_pretrained(base,
folder)`` loads what zoo writes. zoo's own record (the trainer's ``lora`` table, the parent) is
``zoo_adapter.json`` beside them, a file peft never reads.

Reading needs no peft: each layer's weight gets ``B @ A * scale`` added (transposed for
transformers' ``Conv1D``, which stores (in, out)), which is what peft's ``merge_and_unload``
computes. Options that change that sum (DoRA, LoRA biases, extra saved modules, ...) are refused,
never guessed. Nothing read runs code: JSON through `zoo.files`' bounded reader, tensors from
safetensors only (a folder with only ``adapter_model.bin`` is refused).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from zoo.errors import ArtifactError
from zoo.files import LENIENT, read_json, shorten, validate_file_model
from zoo.protocols import CausalLM, LoraTarget
from zoo.storage import PICKLE_SUFFIXES, read_tensors, write_json, write_tensors
from zoo.trainers.lora import LoRALinear, linear_dims
from zoo.trainers.specs import LoraSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ZOO_ADAPTER = "zoo_adapter.json"
PREFIX = "base_model.model."  # what peft puts before a module path in the saved file
KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")

# peft options under which an adapter computes more than B @ A * scale on a base layer's weight
UNSUPPORTED = (
    "use_dora",
    "lora_bias",
    "use_qalora",
    "alora_invocation_tokens",
    "layer_replication",
    "trainable_token_indices",
    "target_parameters",
    "modules_to_save",
    "use_bdlora",
    "velora_config",
    "monteclora_config",
)
# a quantified group such as "(a+)+" can take exponential time to match: not a pattern zoo runs
RISKY_PATTERN = re.compile(r"\)[*+?{]")


class AdapterConfig(BaseModel):
    """The fields of ``adapter_config.json`` zoo reads; peft's others are ignored (after the
    checks on `UNSUPPORTED`)."""

    model_config = LENIENT

    peft_type: str
    base_model_name_or_path: str | None = None
    r: int = Field(8, ge=1, le=1 << 16)
    lora_alpha: float = Field(8.0, gt=0)  # peft's default
    use_rslora: bool = False
    bias: str = "none"
    rank_pattern: dict[str, int] | None = None
    alpha_pattern: dict[str, float] | None = None


@dataclass
class Adapter:
    """A LoRA adapter read from a folder: its config and, per module path, ``(A (r, in), B (out, r))``."""

    folder: Path
    config: AdapterConfig
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def rank_and_scale(self, path: str) -> tuple[int, float]:
        """This layer's r and scale as peft computes them (``rank_pattern``, ``alpha_pattern``, rsLoRA)."""
        c = self.config
        r = int(_pattern_value(c.rank_pattern, path, c.r))
        alpha = float(_pattern_value(c.alpha_pattern, path, c.lora_alpha))
        return r, alpha / (math.sqrt(r) if c.use_rslora else r)


def _pattern_value(patterns: dict[str, Any] | None, path: str, default: Any) -> Any:
    """peft's `get_pattern_key`: the first pattern matching the end of ``path`` at a dot."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", path):
            return value
    return default


def is_adapter(folder: Path) -> bool:
    """A folder in peft's adapter layout (zoo's or peft's own)."""
    return (folder / ADAPTER_CONFIG).is_file()


# --------------------------------------------------------------------------- reading


def read_adapter(folder: Path) -> Adapter:
    """A validated adapter folder; one `ArtifactError` naming the file for anything zoo cannot use."""
    where = folder / ADAPTER_CONFIG
    raw = read_json(where)
    if not isinstance(raw, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    if raw.get("peft_type") != "LORA":
        raise ArtifactError(
            f"{where}: peft_type {shorten(raw.get('peft_type'), 40)!r} is not LoRA; zoo reads LoRA adapters only"
        )
    used = [key for key in UNSUPPORTED if raw.get(key)]
    if used:
        raise ArtifactError(f"{where}: {used[0]} = {shorten(raw[used[0]], 60)} is a peft option zoo does not apply")
    config = validate_file_model(AdapterConfig, raw, str(where))
    if config.bias != "none":
        raise ArtifactError(f"{where}: bias {config.bias!r} trains the base's biases too; zoo reads bias 'none' only")
    for pattern in [*(config.rank_pattern or {}), *(config.alpha_pattern or {})]:
        _check_pattern(pattern, where)
    return Adapter(folder, config, _layers(_weights_file(folder)))


def _check_pattern(pattern: str, where: Path) -> None:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ArtifactError(f"{where}: pattern {shorten(pattern, 60)} is not a regular expression ({err})") from None
    if len(pattern) > 256 or RISKY_PATTERN.search(pattern):
        raise ArtifactError(f"{where}: pattern {shorten(pattern, 60)} is too long or repeats a group; use module names")


def _weights_file(folder: Path) -> Path:
    path = folder / ADAPTER_WEIGHTS
    if path.is_file():
        return path
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ArtifactError(
            f"{folder}: holds {', '.join(pickles[:3])} but no {ADAPTER_WEIGHTS}; zoo never loads pickle files "
            "(loading one can run arbitrary code). In an environment you trust, convert it: "
            "PeftModel.from_pretrained(base, folder).save_pretrained(folder) writes safetensors"
        )
    raise ArtifactError(f"{folder}: no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}")


def _layers(path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``adapter_model.safetensors`` as (A, B) per module path; any other tensor is refused."""
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in read_tensors(path).items():
        match = KEY.fullmatch(key)
        if match is None:
            raise ArtifactError(
                f"{path}: tensor {shorten(key, 80)} is not a LoRA weight (base_model.model.PATH.lora_A.weight "
                "or .lora_B.weight); zoo merges plain LoRA only"
            )
        if tensor.dim() != 2 or not tensor.is_floating_point():
            raise ArtifactError(f"{path}: {key} is {tensor.dtype} of shape {list(tensor.shape)}, not a float matrix")
        halves.setdefault(match[1], {})[match[2]] = tensor
    if not halves:
        raise ArtifactError(f"{path}: holds no LoRA weights")
    for module, pair in halves.items():
        if len(pair) != 2:
            raise ArtifactError(f"{path}: {module} has lora_{next(iter(pair))} without its other half")
    return {module: (pair["A"], pair["B"]) for module, pair in halves.items()}


# --------------------------------------------------------------------------- merging


def merge_adapter(model: nn.Module, adapter: Adapter) -> nn.Module:
    """Add each layer's update to ``model``'s weights (in place), after checking every layer: a
    module path the model lacks, or a shape that does not fit, is one error naming the adapter."""
    params = model.state_dict(keep_vars=True)  # the names peft saw: an HF adapter's are the HF model's
    # each linear layer by its weight (a weight tied to an embedding belongs to the linear head)
    owners = {id(p): m for m in model.modules() if linear_dims(m) is not None for p in m.parameters(recurse=False)}
    plan = []
    for path, (a, b) in sorted(adapter.layers.items()):
        weight = params.get(f"{path}.weight")
        module = owners.get(id(weight))
        dims = linear_dims(module) if module is not None else None
        if not isinstance(weight, nn.Parameter) or module is None or dims is None:
            raise _unknown_layer(adapter, path, params, owners)
        r, scale = adapter.rank_and_scale(path)
        if tuple(a.shape) != (r, dims[0]) or tuple(b.shape) != (dims[1], r):
            raise ArtifactError(
                f"{adapter.folder}: {path}: lora_A {list(a.shape)} and lora_B {list(b.shape)} do not fit the base's "
                f"layer ({dims[0]} in, {dims[1]} out) at r={r}; the adapter was made for another base model"
            )
        plan.append((weight, isinstance(module, nn.Linear), a, b, scale))
    with torch.no_grad():
        for weight, is_linear, a, b, scale in plan:
            delta = (b.float() @ a.float()) * scale  # (out, in)
            weight.add_((delta if is_linear else delta.t()).to(weight.device, weight.dtype))  # Conv1D: (in, out)
    return model


def _unknown_layer(adapter: Adapter, path: str, params: dict[str, Any], owners: dict[int, nn.Module]) -> ArtifactError:
    linear = [
        name.removesuffix(".weight") for name, p in params.items() if name.endswith(".weight") and id(p) in owners
    ]
    close = difflib.get_close_matches(path, linear, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; its linear layers: {', '.join(linear[:6])}, ..."
    return ArtifactError(f"{adapter.folder}: adapts {shorten(path, 80)}, which is not a linear layer of the base{hint}")


# --------------------------------------------------------------------------- writing


def adapter_files(model: nn.Module, spec: LoraSpec) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``adapter_config.json``'s fields and ``adapter_model.safetensors``' tensors for a model with
    adapters: the model's own (`zoo.LoraTarget`, e.g. peft's), else those of zoo's wrapper."""
    if isinstance(model, LoraTarget):
        return model.adapter_files()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_a.detach().cpu().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_b.detach().cpu().contiguous()
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if isinstance(model, CausalLM) else None,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(layers),
        "fan_in_fan_out": any(not isinstance(m.base, nn.Linear) for m in layers.values()),  # Conv1D
        "bias": "none",
        "use_rslora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    return config, tensors


def base_reference(parent: dict[str, str] | None) -> str | None:
    """What ``base_model_name_or_path`` records: the parent's ``reference`` when its base came from
    the hub (``hf:ORG/NAME@SHA``), else the local folder its weights came from; None without one."""
    if parent is None:
        return None
    return parent.get("reference") or parent["path"]


def write_adapter(folder: Path, model: nn.Module, spec: LoraSpec, parent: dict[str, str] | None) -> None:
    """Write a trained model's adapters into ``folder`` in peft's layout, with zoo's record beside."""
    config, tensors = adapter_files(model, spec)
    config["base_model_name_or_path"] = base_reference(parent)
    write_json(folder / ADAPTER_CONFIG, config)
    write_tensors(folder / ADAPTER_WEIGHTS, tensors, metadata={"format": "pt"})  # as peft writes it
    write_json(folder / ZOO_ADAPTER, {"lora": spec.model_dump(mode="json"), "parent": parent})
