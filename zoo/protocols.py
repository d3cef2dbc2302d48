"""Every object a plugin hands back to zoo, written down once as a `typing.Protocol`.

The core checks these (``isinstance`` on the runtime-checkable ones, mypy on the shipped plugins);
it never probes for an attribute a protocol does not name. What each hook's ``register`` takes is
in `zoo.hookspecs`; this module says what the things built from those registrations must offer.

Spec side (pure pydantic, read without building anything):

* `ClassifierSpec`     a classifier's input contract: ``input_kind``, ``input_shape``, ``num_classes``.
* `HFImportable`       a model family that can read a Hugging Face folder's config (``zoo import``).

Object side (what ``spec.build()`` returns):

* `Classifier`         ``model(x) -> logits (B, num_classes)``; x is (B, *input_shape) float.
* `CausalLM`           ``model(input_ids, cache=None, ...) -> (logits, cache)`` + ``new_cache``.
* `StaticDecoding`     optional on a causal LM: ``decode_step`` with static shapes.
* `PastTensors`        optional on a causal LM: its KV cache as tensors (ONNX export with past).
* `ShardUnit`          optional on a submodule: FSDP wraps it on its own.
* `HFExportable`       optional on a model: its weights under Hugging Face names, and back.
* `LoraTarget`         optional on a model: LoRA adapters its own way (else zoo's wrapper), saved in peft's layout.
* `Sampler`            ``select(logits, seen, generators) -> next_ids``.
* `Trainer`            ``fit(model, runtime, out, ...) -> FitResult``.
* `Task`               what a trainer on the shared engine supplies (`zoo.EngineTrainer`).
* `Logger`             where the engine's metric records go (``start``, ``log``, ``close``).
* `Callback`           code the engine calls at each step, evaluation and checkpoint.
* `TrainingRun`        what a callback sees of the run (step, metrics, ``save_checkpoint``).
* `Tokenizer`          encode / decode / save, with ``vocab_size``, ``eos_id``, ``pad_id``.
* `ChatTemplate`       optional on a tokenizer: a conversation as token ids.
* `StopTokens`         optional on a causal LM: every id that ends a sequence.
* `SamplingDefaults`   optional on a causal LM: the sampler to use when none is named.
* `TextSource`         one part of a text corpus a data source returns for causal LMs.
* `RecordSource`       a `TextSource` of records: documents (packed with EOS) and chat conversations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


Batch = tuple["torch.Tensor", ...]
# The ground floor names the runtime and the configuration without importing them (they sit
# above): a `zoo.Runtime` and a `zoo.Config` wherever these appear.
Runtime = Any
Config = Any


@dataclass
class FitResult:
    """What `Trainer.fit` returns: the run folder, the steps trained, the last figures, the artifact."""

    out: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifact: Path | None = None


InputKind = Literal["features", "images", "tokens"]


# --------------------------------------------------------------------------- specs


@runtime_checkable
class ClassifierSpec(Protocol):
    """A classifier's spec states what one example looks like, so data is checked before training.

    ``input_kind``: ``"features"`` (``input_shape`` = (F,)), ``"images"`` ((C, H, W), float in
    [0, 1]) or ``"tokens"`` (token ids; ``input_shape`` = () as the length varies).
    """

    input_kind: ClassVar[InputKind]

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def num_classes(self) -> int: ...

    def input_fields(self, input_shape: tuple[int, ...]) -> dict[str, Any]:
        """The spec fields that would make the model take ``input_shape`` (for the fix a data
        mismatch names), e.g. ``{"in_features": 64}``."""
        ...


@runtime_checkable
class HFImportable(Protocol):
    """A model spec class that maps a Hugging Face ``config.json`` onto its own fields."""

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The spec fields (``type`` included) for this config; `ZooError` naming what cannot map."""
        ...


# --------------------------------------------------------------------------- models


@runtime_checkable
class Classifier(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class CausalLM(Protocol):
    """``forward(input_ids (B, T), cache=None, *, attention_mask=None, position_ids=None)`` returns
    ``(logits (B, T, V), cache)``; ``attention_mask`` (B, S) marks real tokens (1) and padding (0)
    over every position seen so far. ``new_cache(batch, max_len, dtype)`` allocates a cache whose
    ``length`` counts the positions stored (`zoo.KVCache` is one any plugin may use). A forward
    that also takes ``logits_to_keep: int`` (0: all; n: the last n positions, as transformers)
    lets decoding skip the output layer on a prompt's other positions."""

    max_seq_len: int
    vocab_size: int

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None) -> Any: ...

    def __call__(self, input_ids: torch.Tensor, cache: Any = None, **kwargs: Any) -> tuple[torch.Tensor, Any]: ...


@runtime_checkable
class PastTensors(Protocol):
    """A causal LM that runs with its KV cache given and returned as plain tensors: what ONNX
    export with past needs (``decoder_with_past.onnx``) when its cache is not a `zoo.KVCache`.
    ``past`` is ``[key_0, value_0, key_1, value_1, ...]``, each (B, kv heads, T, head dim), T >= 0."""

    def past_layout(self) -> tuple[int, int, int] | None:
        """(layers, kv heads, head dim) of that list; None when the cache is not one plain
        (key, value) pair per layer (sliding windows, recurrent states): no export with past."""
        ...

    def forward_with_past(
        self,
        input_ids: torch.Tensor,
        past: Sequence[torch.Tensor],
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits (B, T, V), ``past`` grown by the new positions, same order)."""
        ...


@runtime_checkable
class DecodingLimit(Protocol):
    """A causal LM whose decoding limit is not its training window: ``decode_limit`` is the longest
    sequence (prompt + new tokens) it can decode, None for no limit (a recurrent model). Without
    it, ``max_seq_len`` is both the default training window and the decoding limit."""

    decode_limit: int | None


@runtime_checkable
class StaticDecoding(Protocol):
    """One decoding step with static shapes (a full-length mask, position tensors), which the
    decoding loop may compile or capture as a CUDA graph (``zoo generate --static``)."""

    def decode_step(
        self,
        input_ids: torch.Tensor,
        cache: Any,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache_position: torch.Tensor,
    ) -> torch.Tensor: ...


@runtime_checkable
class ShardUnit(Protocol):
    """A submodule (a transformer block) that FSDP shards on its own: set ``zoo_shard_unit = True``."""

    zoo_shard_unit: bool


@runtime_checkable
class FusedProjections(Protocol):
    """An ``nn.Linear`` that computes several projections at once (attention's q, k and v): its
    output rows come in blocks of these sizes. Muon orthogonalises each block on its own, as the
    separate linear maps they are."""

    zoo_fused_outputs: tuple[int, ...]


@runtime_checkable
class LoraTarget(Protocol):
    """A model that puts LoRA adapters into itself its own way (zoo-hf: through peft); every other
    model gets zoo's wrapper (`zoo.trainers.lora`). ``spec`` is a trainer's `LoraSpec`."""

    def add_lora(self, spec: Any) -> list[str]:
        """Freeze every weight, add adapters to the layers ``spec.targets`` match; their names."""
        ...

    def merge_lora(self) -> None:
        """Fold the adapters into the weights and drop them (the model is plain again)."""
        ...

    def adapter_files(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The adapters as peft saves them: ``adapter_config.json``'s fields and
        ``adapter_model.safetensors``' tensors (``base_model.model.PATH.lora_A.weight``, ...)."""
        ...


@runtime_checkable
class HFExportable(Protocol):
    """A model whose weights map onto a transformers architecture (``zoo export --format hf``)."""

    def hf_export(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(``config.json`` fields with ``model_type``, the state dict under transformers' names);
        `ZooError` naming the field to change when the architecture has no equivalent."""
        ...

    def hf_import(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This model's state dict from tensors under transformers' names (inverse of hf_export)."""
        ...


# --------------------------------------------------------------------------- decoding


@runtime_checkable
class Sampler(Protocol):
    """Picks the next token of every row.

    ``logits`` (B, V) float32; ``seen`` (B, V) bool marks tokens already in each sequence (an
    all-False (B, 1) placeholder when ``needs_seen`` is False, which saves the bookkeeping);
    ``generators`` one seeded ``torch.Generator`` per row (row i of a batch is seeded with
    ``seed + i``): draw with `zoo.draw` so a row samples exactly as it would alone. `zoo serve`
    shares one sampler object among the requests that ask for the same settings and draws their
    rows in one call, and may call ``select`` from two threads at once (its prefill thread and its
    decoding thread), so keep no per-request state or scratch buffers in it.
    """

    needs_seen: bool

    def select(self, logits: torch.Tensor, seen: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Next ids (B,) long."""
        ...


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def describe(self) -> dict[str, Any]:
        """What an artifact's manifest records about it (JSON; the token cache is keyed on it too)."""
        ...

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the tokenizer's files into ``folder``; return `describe()`."""
        ...


@runtime_checkable
class ChatTemplate(Protocol):
    """A tokenizer that formats a conversation (``zoo generate --chat``, ``zoo chat``)."""

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of ``messages`` ({"role", "content"} dicts), followed by the assistant's turn
        opening when ``add_generation_prompt``, exactly as the model was trained to see them;
        `ZooError` when it has no template."""
        ...


@runtime_checkable
class StopTokens(Protocol):
    """A model that knows more end-of-sequence ids than its tokenizer's one (a Hugging Face
    ``generation_config.json`` may list several): decoding stops on any of them."""

    stop_ids: list[int]


@runtime_checkable
class SamplingDefaults(Protocol):
    """A model that ships a decoding recipe (a Hugging Face ``generation_config.json``): the
    sampler spec used when the caller names none (None: greedy)."""

    default_sampler: dict[str, Any] | None


# --------------------------------------------------------------------------- training


@runtime_checkable
class Trainer(Protocol):
    """What ``TrainerSpec.build()`` returns. ``zoo train`` calls ``fit`` once.

    ``data``: the ``--data`` path, or a dataset object given from Python (None: the trainer's
    own default); ``resume``: continue the run
    in ``out`` (True or ``"last"``: its latest checkpoint; ``"best"``; or a checkpoint folder);
    ``force``: replace a finished run in ``out``; ``run_info``: what
    ``run.json`` records (model and trainer specs, runtime, parent artifact); ``save_artifact(path,
    model)`` saves the trained model as a zoo artifact; ``inputs``: (flag, path) pairs the run reads,
    which ``out`` may not hold; ``config``: the configuration the run was built from (its registry
    has the data sources; None: the default one). Subclass `zoo.EngineTrainer` to get all of it from the engine.
    """

    def fit(
        self,
        model: nn.Module,
        runtime: Runtime,
        out: str | Path,
        *,
        data: Any = None,
        resume: bool | str | Path = False,
        force: bool = False,
        run_info: dict[str, Any] | None = None,
        save_artifact: Callable[[Path, nn.Module], Path] | None = None,
        inputs: Iterable[tuple[str, str | Path | None]] = (),
        config: Config | None = None,
    ) -> FitResult: ...


@runtime_checkable
class Task(Protocol):
    """What a trainer plugs into the shared engine (`zoo.EngineTrainer.make_task` returns one)."""

    unit: str  # what throughput counts: "examples" or "tokens"
    summary: dict[str, float]  # figures added to the run's result (e.g. the reachable accuracy)

    def sample(self, generator: torch.Generator, batch_size: int) -> Batch:
        """A batch of ``batch_size`` examples on the CPU, drawn with ``generator``."""
        ...

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean loss of a batch already on the runtime's device."""
        ...

    def count(self, batch: Batch) -> int:
        """How many units (examples or tokens) a batch holds."""
        ...

    def evaluate(self, model: nn.Module, runtime: Runtime, batches: int) -> dict[str, float]:
        """Validation metrics (``val_loss`` first); must not touch the global RNG."""
        ...


@runtime_checkable
class Logger(Protocol):
    """Receives the engine's metric records on the main process (a `zoo.LoggerSpec` builds one).

    A record is a flat dict: ``step``, ``split`` (``"train"``, ``"val"``, ``"event"``, ``"ranks"``)
    and figures (``loss``, ``lr``, ``grad_norm``, ``tokens_per_s``, ``val_loss``, ...).
    """

    def start(self, out: Path, step: int) -> None:
        """Open for the run folder ``out``, starting at ``step`` (> 0 on resume: drop what the
        logger holds past ``step``, which the resumed run writes again)."""
        ...

    def log(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Schedule(Protocol):
    """A learning-rate schedule (a `zoo.ScheduleSpec` builds one)."""

    def factor(self, step: int, max_steps: int) -> float:
        """The multiplier of the peak lr for optimizer step ``step`` (0-based) of ``max_steps``."""
        ...


@runtime_checkable
class TrainingRun(Protocol):
    """What a callback sees of the run it watches."""

    out: Path
    step: int  # optimizer steps done
    max_steps: int
    loss: float  # the last step's training loss (this process)
    metrics: dict[str, float]  # the latest figures: train_loss, val_loss, ...
    is_main: bool

    @property
    def model(self) -> nn.Module:
        """The model being trained, not wrapped for DDP or compilation: read its weights, or (at
        ``on_train_end``) replace them with what should be saved as ``RUN/model``."""
        ...

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, with its parameter groups (``lr`` is this step's learning rate)."""
        ...

    def save_checkpoint(self, name: str) -> None:
        """Ask for the full training state as ``checkpoints/NAME`` (replacing one of that name),
        written once every callback has seen the current event. Every process asks alike."""
        ...

    def add_model(self, name: str, model: nn.Module) -> None:
        """At ``on_train_end``: save ``model`` as the artifact ``RUN/NAME`` too."""
        ...


@runtime_checkable
class Callback(Protocol):
    """Code the engine runs on every process (a `zoo.CallbackSpec` builds one; subclass the
    `zoo.Callback` base, whose methods do nothing, and override what you need).

    Its state goes into every checkpoint (``state_dict`` returns JSON-able values and tensors,
    which are stored as safetensors beside the JSON), so a resumed run continues exactly, patience
    counters, best scores and averaged weights included.
    """

    def on_step_end(self, run: TrainingRun) -> None: ...

    def on_eval(self, run: TrainingRun, metrics: Mapping[str, float]) -> None: ...

    def on_checkpoint(self, run: TrainingRun, path: Path) -> None: ...

    def should_stop(self, run: TrainingRun) -> str | None:
        """Why the run should stop now (ends it after this step, with a checkpoint), or None."""
        ...

    def on_train_end(self, run: TrainingRun) -> None:
        """After the last step, before ``RUN/model`` is saved: change ``run.model``'s weights to
        choose what is saved, or ``run.add_model(NAME, module)`` to save more."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# --------------------------------------------------------------------------- data


@runtime_checkable
class TextSource(Protocol):
    """One part of a text corpus (a file, a record set) a causal-LM data source returns."""

    @property
    def name(self) -> str: ...

    def fingerprint(self) -> list[Any]:
        """Changes whenever the text may have changed (the token cache is keyed on it)."""
        ...

    def chunks(self) -> Iterator[str]:
        """The text in pieces cut at line ends; `DataError` naming the file (and line) when bad."""
        ...


@runtime_checkable
class RecordSource(TextSource, Protocol):
    """A text source made of records: a document (``str``) is packed into the token stream with
    EOS after it; a conversation (a list of ``{"role", "content"}``) is formatted with the
    tokenizer's chat template and scored on the assistant's tokens only."""

    def records(self) -> Iterator[tuple[str, str | list[dict[str, str]]]]:
        """``(where, record)`` pairs; ``where`` ("file:line") names a record in error messages."""
        ...
