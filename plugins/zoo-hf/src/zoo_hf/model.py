"""Adapters from transformers models to zoo's protocols, built offline from a config or a local dir.

`HFCausalLM` speaks the causal-LM protocol (``forward(ids, cache, attention_mask, position_ids)
-> (logits, cache)``, ``new_cache``), so zoo's trainer and samplers run on it unchanged. Both
adapters expose the wrapped model's own state dict, so an artifact's ``model.safetensors`` has
the key names ``from_pretrained`` expects.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import zoo
from zoo import SpecError, ZooError, read_json, shorten
from zoo_hf.folders import FolderError, check_folder, remote_code_keys
from zoo_hf.hub import describe

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# Passed to every transformers call that reads a folder or a config: no code from the folder, no
# network, and no pickled weights (safetensors only).
SAFE = {"trust_remote_code": False, "local_files_only": True}


def _spec_error(spec: Any, message: str) -> SpecError:
    return SpecError([(spec.source(), message)])


def quiet_transformers() -> None:
    """transformers' own progress bars ("Loading weights") and warnings off, unless the command line
    was asked for them (`zoo --verbose`: `zoo.verbose()`); a program using zoo keeps its settings."""
    if zoo.verbose():
        return
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


@contextlib.contextmanager
def rejected_by_transformers(where: str, error: Callable[[str], ZooError] = FolderError) -> Iterator[None]:
    """transformers validates configs and weights with many exception types (TypeError, IndexError,
    huggingface_hub's validation errors...): any of them on a user's file is bad input, named."""
    quiet_transformers()
    try:
        yield
    except ZooError:
        raise
    except Exception as err:
        raise error(f"{where}: transformers rejected it ({type(err).__name__}: {shorten(str(err))})") from None


def make_config(spec: Any) -> Any:
    """A transformers config from the spec's inline dict or its local directory; never online."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    folder = spec.local_dir()
    if folder is not None:
        try:
            check_folder(folder)
        except FolderError as err:
            raise _spec_error(spec, str(err)) from None
        with rejected_by_transformers(f"{folder / 'config.json'}", lambda m: _spec_error(spec, m)):
            return AutoConfig.from_pretrained(folder, **SAFE)
    values = dict(spec.config)
    model_type = values.pop("model_type")
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise SpecError([(f"{spec.type}.config.model_type", f"transformers knows no model_type {model_type!r}{hint}")])
    with rejected_by_transformers(f"the {model_type} config", lambda m: _spec_error(spec, m)):
        # defaults such as GPT-2's bos/eos 50256 point outside a small vocabulary: unset those
        defaults = CONFIG_MAPPING[model_type]()
        vocab = values.get("vocab_size", getattr(defaults, "vocab_size", None))
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(defaults, key, None)
            if key not in values and isinstance(vocab, int) and isinstance(value, int) and value >= vocab:
                values[key] = None
        return AutoConfig.for_model(model_type, **values)


def inline_config(config: Any) -> dict[str, Any]:
    """A model or generation config as the JSON-able dict an inline spec takes (model_type first)."""
    values = config.to_diff_dict()
    for key in ("transformers_version", "architectures", "dtype", "torch_dtype", "_from_model_config"):
        values.pop(key, None)
    kind = getattr(config, "model_type", None)
    return {"model_type": kind, **values} if kind is not None else values


def _load(auto_cls: Any, spec: Any, **extra: Any) -> Any:
    config = make_config(spec)
    for key, value in extra.items():
        setattr(config, key, value)
    folder = spec.local_dir()
    kwargs = {"attn_implementation": spec.attn_implementation}
    where = str(folder) if folder is not None else f"the {config.model_type} model"
    with rejected_by_transformers(where, lambda m: _spec_error(spec, m)):
        # on the meta device (`zoo show --params`, zoo's header check before loading) the shapes
        # come from config.json alone: no weights are read
        if folder is None or torch.empty(()).device.type == "meta":
            return auto_cls.from_config(config, dtype=torch.float32, trust_remote_code=False, **kwargs)
        return auto_cls.from_pretrained(
            folder, config=config, dtype=torch.float32, use_safetensors=True, **SAFE, **kwargs
        )


class HFAdapter(nn.Module):
    """Exposes the wrapped model's state dict unchanged (no ``hf.`` prefix)."""

    def __init__(self, hf: Any) -> None:
        super().__init__()
        self.hf: Any = hf  # a transformers PreTrainedModel

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.hf.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return self.hf.load_state_dict(state_dict, strict=strict, assign=assign)


class HFCache:
    """zoo's cache handle around a transformers cache object (created by the model on prefill)."""

    def __init__(self) -> None:
        self.hf: Any = None

    @property
    def length(self) -> int:
        return int(self.hf.get_seq_length()) if self.hf is not None else 0


class HFCausalLM(HFAdapter):
    def __init__(self, hf: Any) -> None:
        super().__init__(hf)
        config = hf.config
        self.vocab_size = int(config.vocab_size)
        self.max_seq_len = int(
            getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048
        )
        # every EOS id of generation_config.json (instruct models often list several)
        eos = getattr(hf.generation_config, "eos_token_id", None) if hf.generation_config is not None else None
        ids = [eos] if isinstance(eos, int) else list(eos) if isinstance(eos, list | tuple) else []
        self.stop_ids: list[int] = [int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)]
        self.default_sampler = sampler_from(hf.generation_config)
        params = inspect.signature(hf.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.2x
        self._keeps_logits = "logits_to_keep" in params

    def add_lora(self, spec: Any) -> list[str]:
        """LoRA through peft (`zoo.LoraTarget`): adapters on the layers ``spec.targets`` match."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ZooError("LoRA on Hugging Face models uses peft: pip install 'zoo-hf[lora]'") from None
        targets = zoo.lora_targets(self.hf, spec.targets)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=spec.rank,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=targets,
            fan_in_fan_out=any(type(self.hf.get_submodule(t)).__name__ == "Conv1D" for t in targets),
        )
        self.hf = get_peft_model(self.hf, config)
        return targets

    def merge_lora(self) -> None:
        self.hf = self.hf.merge_and_unload()
        for p in self.hf.parameters():
            p.requires_grad_(True)

    def adapter_files(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What peft's ``save_pretrained`` writes: its config (as saved, for inference) and state dict."""
        from peft import get_peft_model_state_dict

        config = json.loads(json.dumps(self.hf.peft_config["default"].to_dict(), default=_jsonable))
        config["inference_mode"] = True
        # the base's own weights are the base's: never copied into the adapter file
        state = get_peft_model_state_dict(self.hf, save_embedding_layers=False)
        return config, {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def new_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> HFCache:
        return HFCache()

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: HFCache | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, HFCache | None]:
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "use_cache": cache is not None}
        if logits_to_keep and self._keeps_logits:
            kwargs["logits_to_keep"] = logits_to_keep
        if position_ids is not None:
            kwargs["position_ids"] = position_ids.expand(input_ids.shape[0], -1)
        if cache is not None and cache.hf is not None:
            kwargs[self._cache_kw] = cache.hf
        out = self.hf(input_ids=input_ids, **kwargs)
        if cache is not None:
            cache.hf = getattr(out, "cache", None) or out.past_key_values
        return out.logits, cache

    def past_layout(self) -> tuple[int, int, int] | None:
        """(layers, kv heads, head dim) when transformers keeps one plain (key, value) pair per
        layer (`zoo.PastTensors`); None for sliding-window or other layer kinds."""
        config = self.hf.config.get_text_config(decoder=True)
        kinds = getattr(config, "layer_types", None)
        if kinds is not None and set(kinds) != {"full_attention"}:
            return None
        if kinds is None and getattr(config, "sliding_window", None):
            return None
        heads, layers = getattr(config, "num_attention_heads", None), getattr(config, "num_hidden_layers", None)
        if not isinstance(heads, int) or not isinstance(layers, int):  # not attention layers at all
            return None
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        return layers, kv_heads, head_dim

    def forward_with_past(
        self,
        input_ids: torch.Tensor,
        past: Sequence[torch.Tensor],
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The forward pass on a transformers `DynamicCache` filled from ``past`` (what ONNX export
        with past traces); returns the logits and every layer's grown keys and values."""
        from transformers import DynamicCache

        cache = HFCache()
        cache.hf = DynamicCache()
        for layer in range(len(past) // 2):
            cache.hf.update(past[2 * layer], past[2 * layer + 1], layer)
        logits, _ = self(
            input_ids, cache, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=logits_to_keep
        )
        return logits, [t for layer in cache.hf.layers for t in (layer.keys, layer.values)]


def _jsonable(value: Any) -> Any:
    """peft's config as its ``save_pretrained`` writes it: sets as lists, enums as their values."""
    return sorted(value) if isinstance(value, set | frozenset) else str(getattr(value, "value", value))


def sampler_from(generation: Any) -> dict[str, Any] | None:
    """generation_config.json's decoding recipe as a zoo sampler spec (None: greedy); values zoo
    cannot use are left at the sampler's defaults, and the spec is validated when it is built."""
    if generation is None or not getattr(generation, "do_sample", False):
        return None
    spec: dict[str, Any] = {"type": "sample"}
    for theirs, mine in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"), ("min_p", "min_p")):
        value = getattr(generation, theirs, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            spec[mine] = value
    if isinstance(spec.get("top_k"), float) or spec.get("top_k", 1) < 1:
        spec.pop("top_k")
    penalty = getattr(generation, "repetition_penalty", None)
    if isinstance(penalty, int | float) and penalty >= 1:
        spec["repetition_penalty"] = float(penalty)
    return spec


class HFClassifier(HFAdapter):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids).logits  # (B, num_labels)


class HFTokenizer:
    """An AutoTokenizer from a local directory, speaking zoo's tokenizer protocol."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.vocab_size = len(tok)
        self.eos_id = tok.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (self.eos_id or 0)

    def encode(self, text: str) -> list[int]:
        with self._panics("encode text"):
            return list(self.tok.encode(text))  # special tokens (a BOS) added as transformers does by default

    @contextlib.contextmanager
    def _panics(self, what: str) -> Iterator[None]:
        """A crafted tokenizer.json can panic in Rust at encode time as at load time (a pre-tokenizer
        regex past its backtracking limit): one message naming the folder, not a traceback."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # pyo3's PanicException is a BaseException
            where = self.tok.name_or_path or "the tokenizer"
            raise FolderError(
                f"{where}: the tokenizer failed to {what} ({type(err).__name__}: {shorten(str(err))})"
            ) from None

    def decode(self, ids: Any) -> str:
        return str(self.tok.decode([int(i) for i in ids], skip_special_tokens=True))

    def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> list[int]:
        """The folder's chat template, rendered and tokenized as transformers' own
        ``apply_chat_template`` does (`zoo.ChatTemplate`)."""
        if not self.tok.chat_template:
            raise ZooError("this model's tokenizer has no chat_template (tokenizer_config.json); use plain prompts")
        with rejected_by_transformers("the chat template", ZooError):
            template = self.tok.get_chat_template()
        # zoo renders it (bounded in time and size, sandboxed as transformers does), then tokenizes
        where = f"{self.tok.name_or_path or 'the tokenizer'}: chat template"
        text = zoo.render_chat_template(
            template, messages, add_generation_prompt=add_generation_prompt, where=where, **self.tok.special_tokens_map
        )
        with self._panics("encode the chat"):
            return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def save(self, folder: Path) -> dict[str, Any]:
        """As transformers saves it: tokenizer.json, its config, special tokens, chat template."""
        self.tok.save_pretrained(folder)
        return self.describe()

    def describe(self) -> dict[str, Any]:
        return {
            "type": "hf",
            "file": "tokenizer.json",
            "vocab_size": self.vocab_size,
            "eos_token": self.tok.eos_token,
            "pad_token": self.tok.pad_token,
        }


def local_tokenizer(spec: Any) -> HFTokenizer | None:
    folder = spec.local_dir()
    if folder is None or not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return None
    try:
        return read_tokenizer(folder)
    except ZooError as err:
        raise _spec_error(spec, str(err)) from None


def read_tokenizer(folder: Path) -> HFTokenizer:
    """A folder's tokenizer through ``AutoTokenizer`` (no code from the folder, no network)."""
    from transformers import AutoTokenizer

    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        keys = remote_code_keys(read_json(config_path, FolderError))
        if keys:
            raise FolderError(f"{config_path}: names code to run ({', '.join(keys)}); zoo never runs a folder's code")
    quiet_transformers()
    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(folder, **SAFE))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # a crafted tokenizer.json can panic inside `tokenizers` (Rust)
        raise FolderError(f"{folder}: tokenizer files present but unreadable ({shorten(str(err))})") from None


def load_hf_tokenizer(folder: Path, desc: Any) -> HFTokenizer:
    """The ``hf`` tokenizer kind of an artifact (registered in `zoo_hf.hooks`)."""
    return read_tokenizer(folder)


def build_causal_lm(spec: Any) -> HFCausalLM:
    from transformers import AutoModelForCausalLM, GenerationConfig

    hf = _load(AutoModelForCausalLM, spec)
    if spec.generation is not None:  # an artifact's: the source folder's generation_config.json
        with rejected_by_transformers(f"{spec.type}.generation", lambda m: _spec_error(spec, m)):
            hf.generation_config = GenerationConfig(**spec.generation)
    model = HFCausalLM(hf)
    zoo.attach(model, spec, tokenizer=local_tokenizer(spec), source=hub_source(spec))
    return model


def build_classifier(spec: Any) -> HFClassifier:
    from transformers import AutoModelForSequenceClassification

    model = HFClassifier(_load(AutoModelForSequenceClassification, spec, num_labels=spec.num_labels))
    zoo.attach(model, spec, source=hub_source(spec))
    return model


def hub_source(spec: Any) -> dict[str, Any] | None:
    """Where a hub snapshot's weights came from (recorded as the parent of what is saved)."""
    folder = spec.local_dir()
    return describe(folder) if folder is not None and torch.empty(()).device.type != "meta" else None


if TYPE_CHECKING:  # mypy checks the adapters against zoo's protocols

    def _causal_lm(
        model: HFCausalLM, tokenizer: HFTokenizer
    ) -> tuple[
        zoo.CausalLM,
        zoo.StopTokens,
        zoo.SamplingDefaults,
        zoo.LoraTarget,
        zoo.PastTensors,
        zoo.Tokenizer,
        zoo.ChatTemplate,
    ]:
        return model, model, model, model, model, tokenizer, tokenizer

    def _classifier(model: HFClassifier) -> zoo.Classifier:
        return model
