"""Specs of HF models (no torch or transformers import here: `zoo list` stays fast).

A spec names either an inline ``config`` (any ``model_type`` transformers knows, built with
random weights) or a ``path``: a local folder (config.json + safetensors, optionally a tokenizer)
or a hub reference ``hf:ORG/NAME[@REVISION]``, the only thing ever fetched from the network
(`zoo_hf.hub`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

import zoo
from zoo_hf import hub
from zoo_hf.folders import remote_code_keys


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


HUB_PREFIX = "hf:"


class _HFSpec(zoo.ModelSpec):
    config: dict[str, Any] | None = Field(
        None, description="inline transformers config; must include model_type (e.g. gpt2, llama)"
    )
    path: str | None = Field(
        None,
        description="local directory with config.json + model.safetensors, or hf:ORG/NAME[@REVISION] from the hub",
        max_length=4096,
    )
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel")
    trust_remote_code: ClassVar[bool] = False

    @model_validator(mode="after")
    def _one_source(self) -> Any:
        if (self.config is None) == (self.path is None):
            raise ValueError("give exactly one of config (inline) or path (a local directory)")
        if self.config is not None and not isinstance(self.config.get("model_type"), str):
            raise ValueError('config needs a model_type, e.g. config = { model_type = "gpt2", ... }')
        if self.config is not None and not _finite(self.config):
            raise ValueError("config values must be finite numbers (no inf or nan)")
        if self.config is not None and remote_code_keys(self.config):
            raise ValueError(
                "config may not name code to run (auto_map); zoo builds only architectures transformers ships"
            )
        if self.path is not None and self.path.startswith(HUB_PREFIX):
            hub.parse(self.path[len(HUB_PREFIX) :])
        return self

    @classmethod
    def _folder_config(cls, folder: Path) -> dict[str, Any] | None:
        """config.json of a local transformers folder, or None (read as JSON only: no transformers)."""

        if not (folder / "config.json").is_file() or (folder / "manifest.json").exists():
            return None
        config = zoo.read_json(folder / "config.json")
        return config if isinstance(config, dict) else None

    def source(self) -> str:
        return f"{self.type}.path" if self.path is not None else f"{self.type}.config"

    def local_dir(self) -> Path | None:
        """The folder to read: ``path`` itself, or the hub snapshot an ``hf:`` path resolves to."""
        if self.path is None:
            return None
        if self.path.startswith(HUB_PREFIX):
            return hub.resolve(self.path[len(HUB_PREFIX) :])
        return Path(self.path).expanduser()


CAUSAL = ("ForCausalLM", "LMHeadModel")
CLASSIFIER = ("ForSequenceClassification",)
TINY_GPT2 = {"model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 256, "n_positions": 64}


class HFCausalLMSpec(_HFSpec):
    """A transformers causal LM adapted to zoo's causal-LM protocol (logits + KV cache)."""

    type: Literal["hf-causal-lm"] = "hf-causal-lm"
    protocol = "causal-lm"
    generation: dict[str, Any] | None = Field(
        None, description="inline generation_config (EOS ids, sampling defaults); null: the folder's or transformers'"
    )

    @model_validator(mode="after")
    def _plain_generation(self) -> Any:
        if self.generation is not None and not _finite(self.generation):
            raise ValueError("generation values must be finite numbers (no inf or nan)")
        return self

    @classmethod
    def example(cls) -> HFCausalLMSpec:
        return cls(config=TINY_GPT2)

    @classmethod
    def from_folder(cls, folder: Path) -> HFCausalLMSpec | None:
        """A transformers folder whose architecture is a causal LM (or names none)."""
        config = cls._folder_config(folder)
        archs = config.get("architectures") if config is not None else None
        if config is None or (isinstance(archs, list) and not any(str(a).endswith(CAUSAL) for a in archs)):
            return None
        return cls(path=str(folder))

    builder = "zoo_hf.model:build_causal_lm"  # transformers and torch are imported only when built

    def artifact_spec(self, module: Any) -> HFCausalLMSpec:
        """Saved artifacts carry the config inline, so they load without the original path."""
        from zoo_hf.model import inline_config

        generation = inline_config(module.hf.generation_config) if module.hf.generation_config is not None else None
        return self.model_copy(
            update={"config": inline_config(module.hf.config), "path": None, "generation": generation}
        )

    def write_artifact_files(self, module: Any, folder: Path) -> None:
        """config.json (and generation_config.json) beside model.safetensors: `from_pretrained`
        reads the artifact as is."""
        module.hf.config.save_pretrained(folder)
        if module.hf.generation_config is not None:
            module.hf.generation_config.save_pretrained(folder)


class HFClassifierSpec(_HFSpec):
    """A transformers sequence classifier: forward(input_ids) -> logits (B, num_labels)."""

    type: Literal["hf-classifier"] = "hf-classifier"
    protocol = "classifier"
    input_kind: ClassVar[zoo.InputKind] = "tokens"
    num_labels: int = Field(2, ge=2, description="number of classes")

    # zoo.ClassifierSpec: token ids of any length in, num_labels classes out
    @property
    def input_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def num_classes(self) -> int:
        return self.num_labels

    def input_fields(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        return {}

    @classmethod
    def example(cls) -> HFClassifierSpec:
        return cls(config={**TINY_GPT2, "pad_token_id": 0})

    @classmethod
    def from_folder(cls, folder: Path) -> HFClassifierSpec | None:
        """A transformers folder saved from a sequence classifier."""
        config = cls._folder_config(folder)
        archs = config.get("architectures") if config is not None else None
        if config is None or not isinstance(archs, list) or not any(str(a).endswith(CLASSIFIER) for a in archs):
            return None
        labels = config.get("id2label")
        return cls(path=str(folder), num_labels=len(labels) if isinstance(labels, dict) and len(labels) >= 2 else 2)

    builder = "zoo_hf.model:build_classifier"  # transformers and torch are imported only when built

    def artifact_spec(self, module: Any) -> HFClassifierSpec:
        from zoo_hf.model import inline_config

        return self.model_copy(update={"config": inline_config(module.hf.config), "path": None})

    def write_artifact_files(self, module: Any, folder: Path) -> None:
        module.hf.config.save_pretrained(folder)
