"""The rules a Hugging Face model folder obeys before transformers reads it (or, for a hub repo,
before its weights are fetched): no code named to run, an architecture transformers ships,
safetensors weights. JSON only: no torch here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zoo
from zoo import ZooError, read_json, shorten

REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def remote_code_keys(config: dict[str, Any]) -> list[str]:
    """Keys of a config that would make transformers run code shipped beside the weights."""
    return [k for k in REMOTE_CODE_KEYS if k in config]


class FolderError(ZooError):
    """A Hugging Face model folder zoo refuses to read, or cannot."""


def check_folder(folder: Path) -> dict[str, Any]:
    """Check a local HF model folder before transformers sees it; returns its config.json.

    Refused with one message each: a missing folder or config.json, a config (or tokenizer
    config) that asks to run the folder's own code (``auto_map``), a ``model_type`` transformers
    does not ship, and weights that exist only as pickles (``*.bin``, ``*.pt``).
    """
    if not folder.is_dir():
        raise FolderError(f"{folder}: no such directory")
    config = check_config(folder)
    if not (any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()):
        try:
            zoo.refuse_pickles(folder)
        except ZooError as err:
            raise FolderError(str(err)) from None
        raise FolderError(f"{folder}: no model.safetensors (or sharded *.safetensors) weights")
    return config


def check_config(folder: Path) -> dict[str, Any]:
    """The rules on a folder's JSON alone (what a hub repo is checked by before its weights are
    fetched): config.json present, no code named to run, an architecture transformers ships."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if not (folder / "config.json").exists():
        raise FolderError(f"{folder}: no config.json (expected a transformers model directory)")
    config = read_json(folder / "config.json", FolderError)
    if not isinstance(config, dict):
        raise FolderError(f"{folder / 'config.json'}: expected a JSON object")
    tok_config_path = folder / "tokenizer_config.json"
    tok_config = read_json(tok_config_path, FolderError) if tok_config_path.exists() else {}
    for name, data in (("config.json", config), ("tokenizer_config.json", tok_config)):
        keys = remote_code_keys(data) if isinstance(data, dict) else []
        if keys:
            raise FolderError(
                f"{folder / name}: {keys[0]} asks to run Python code shipped in the folder; zoo never runs "
                f"code from model folders. Remove {keys[0]!r} if the architecture is one transformers ships."
            )
    check_generation_config(folder / "generation_config.json")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise FolderError(
            f"{folder / 'config.json'}: model_type {shorten(model_type, 60)} is not an architecture transformers "
            "ships; zoo builds only those (no remote code)"
        )
    return config


# generation_config.json's keys zoo reads (stop ids, the sampling recipe), with the JSON types each takes
_GENERATION_KEYS: dict[str, tuple[type, ...]] = {
    "eos_token_id": (int, list),
    "do_sample": (bool,),
    "temperature": (int, float),
    "top_k": (int,),
    "top_p": (int, float),
    "min_p": (int, float),
    "repetition_penalty": (int, float),
}


def check_generation_config(path: Path) -> None:
    """generation_config.json, when there, is a JSON object whose stop ids and sampling values have
    the types transformers expects; transformers itself falls back to defaults silently."""
    if not path.exists() and not path.is_symlink():
        return
    data = read_json(path, FolderError)
    if not isinstance(data, dict):
        raise FolderError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, types in _GENERATION_KEYS.items():
        value = data.get(key)
        if value is None:
            continue
        ok = isinstance(value, types) and (bool not in types) == (not isinstance(value, bool))
        if ok and isinstance(value, list):
            ok = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        if not ok or (isinstance(value, int) and not isinstance(value, bool) and value < 0):
            raise FolderError(f"{path}: {key} {shorten(value, 60)} is not a valid value (expected {_kinds(types)})")


def _kinds(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", list: "a list of token ids"}
    return " or ".join(names[t] for t in types)
