"""`zoo export --format hf` and `zoo import`: any model family <-> a transformers folder.

The mapping of weights belongs to the model family (`zoo.HFExportable` on its model,
`zoo.HFImportable` on its spec class; MiniGPT implements both); this module does what is the
same for every family: check the folder (no remote code, no pickles), read the tensors with
safetensors, build the transformers model from the family's config fields, check every tensor
by name, shape and dtype, and write the folder atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import zoo


class ConversionError(zoo.ZooError):
    """A model or folder that cannot be converted; the message names what to change."""


def to_transformers(model: Any) -> Any:
    """The transformers model (fp32, on the CPU) holding an `HFExportable` model's weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields, tensors = model.hf_export()
    fields = dict(fields)
    kind = fields.pop("model_type", None)
    if not isinstance(kind, str):
        raise ConversionError(f"{type(model).__name__}.hf_export() must name a model_type in its config fields")
    hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **fields)).eval()
    params = dict(hf.named_parameters(remove_duplicate=False))
    missing, unexpected = hf.load_state_dict(tensors, strict=False)
    loaded = {params[k].data_ptr() for k in tensors if k in params}
    # a missing name is fine only for a buffer, or a parameter tied to one that was loaded
    leftover = [k for k in missing if k in params and params[k].data_ptr() not in loaded]
    if leftover or unexpected:
        raise ConversionError(f"{kind} tensors not matched: missing {leftover}, unexpected {list(unexpected)}")
    return hf


def write_hf(model: Any, folder: Path, options: Any = None) -> None:
    """Into ``folder`` (fresh, moved into place by zoo): what ``AutoModelForCausalLM.from_pretrained``
    and ``AutoTokenizer.from_pretrained`` load."""
    from zoo_hf.model import HFAdapter

    hf: Any
    if isinstance(model, HFAdapter):
        hf = model.hf
    elif isinstance(model, zoo.HFExportable):
        hf = to_transformers(model)
    else:
        kind = zoo.spec_of(model).type
        raise ConversionError(
            f"model type {kind!r} has no Hugging Face export: its model needs hf_export() (zoo.HFExportable)"
        )
    tokenizer = zoo.tokenizer_of(model)
    if tokenizer is None and hf.config.vocab_size == zoo.ByteTokenizer.vocab_size:
        tokenizer = zoo.ByteTokenizer()  # what zoo itself encodes with when a model has none
    if tokenizer is None:
        raise ConversionError(
            "this model has no tokenizer recorded, so the folder would have none that matches it; "
            "save the model with its tokenizer (zoo.save(model, path, tokenizer=...)) and export that"
        )
    hf.save_pretrained(folder, safe_serialization=True)
    tokenizer.save(folder)
    if not (folder / "tokenizer.json").is_file():  # never a folder whose AutoTokenizer is empty
        raise ConversionError(f"{type(tokenizer).__name__} wrote no tokenizer.json; install `tokenizers`")


def read_folder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a local HF folder's safetensors files, by name (never a pickle)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{folder}: no *.safetensors weights")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(zoo.read_tensors(file))
    return tensors


def importable_types(config: zoo.Config) -> list[str]:
    return sorted(t for t, e in config.registry.types("models").items() if isinstance(e.spec_cls, zoo.HFImportable))


def import_hf(folder: Path, as_type: str | None = None, config: zoo.Config | None = None) -> Any:
    """A zoo model (built through the registry) carrying the weights of a local transformers folder.

    The folder is checked first (no remote code, no pickles); the family maps the config to its
    spec; the tensors are read with safetensors and must have exactly the names, shapes and
    dtypes the model needs.
    """
    from transformers import AutoConfig

    from zoo_hf.folders import check_folder
    from zoo_hf.model import SAFE, rejected_by_transformers

    cfg = config or zoo.default_config()
    folder = Path(folder)
    check_folder(folder)
    where = folder / "config.json"
    kinds = importable_types(cfg)
    if as_type is None:
        if len(kinds) != 1:
            raise ConversionError(f"choose the model family with --as ({', '.join(kinds) or 'none installed'})")
        as_type = kinds[0]
    spec_cls = cfg.registry.entry("models", as_type).spec_cls
    if not isinstance(spec_cls, zoo.HFImportable):
        raise ConversionError(f"--as {as_type}: it cannot read Hugging Face configs; these can: {', '.join(kinds)}")
    with rejected_by_transformers(str(where), ConversionError):
        full = AutoConfig.from_pretrained(folder, **SAFE).to_dict()  # defaults filled in
    try:
        model = zoo.build_model(spec_cls.from_hf_config(full), config=cfg)
    except zoo.ZooError as err:
        raise ConversionError(f"{where}: {err}") from None
    if not isinstance(model, zoo.HFExportable):
        raise ConversionError(f"model type {as_type!r} maps configs but not tensors (hf_import on its model)")
    mine = model.hf_import(read_folder_tensors(folder))
    zoo.check_tensors(zoo.tensor_info(model.state_dict()), zoo.tensor_info(mine), f"{folder} (as {as_type})")
    model.load_state_dict(mine, strict=True)
    return model.eval()
