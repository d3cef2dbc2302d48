"""`zoo eval ART [ART ...] --data PATH`: models side by side on the same data.

Causal LMs: loss and perplexity over the text, each model with its own tokenizer, and bits per
byte (the summed loss over the text's UTF-8 bytes), which compares models whose tokenizers cut the
text differently. Classifiers: loss and accuracy over every example. One table, ``--json``, and a
bar chart (``--plot``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import Config, default_config, spec_ref
from zoo.data.sources import open_data
from zoo.errors import DataError, ZooError
from zoo.finetune import open_model
from zoo.lm.text_data import iter_texts
from zoo.lm.tokenizers import text_tokenizer
from zoo.protocols import CausalLM, ClassifierSpec, RecordSource, Tokenizer
from zoo.quantization import quantize as quantize_model
from zoo.quantization import weight_bytes
from zoo.runtime import Runtime
from zoo.tags import spec_of
from zoo.trainers.classifier import classification_scores


@dataclass
class Score:
    """One model's figures on the data."""

    model: str  # as the user named it
    type: str
    protocol: str
    parameters: int
    metrics: dict[str, float] = field(default_factory=dict)
    quantize: str = "none"  # "int8": the same model with int8 linear layers (`zoo.quantize`)


def evaluate(
    targets: list[str | Path],
    data: str | Path,
    *,
    config: Config | None = None,
    runtime: Runtime | None = None,
    max_bytes: int | None = None,
    context: int | None = None,
    batch_size: int = 8,
    data_format: str | None = None,
    tokenizer: Tokenizer | None = None,
    quantize: str | None = None,
) -> list[Score]:
    """``zoo.evaluate(["runs/a", "runs/b"], "text.txt")``: what ``zoo eval`` prints, as `Score` rows.
    Causal LMs read the text through their own tokenizer, or ``tokenizer`` when given (`zoo eval
    --tokenizer`); one with neither and a vocabulary other than bytes is refused.
    ``quantize="int8"``: each model twice, as it is (fp32) and then with int8 linear layers, with
    the weights' memory of each (``weights_mb``)."""

    cfg = config or default_config()
    runtime = runtime or Runtime(cfg.runtime)
    method = runtime.check_quantize(quantize)
    text: str | None = None  # read once, for every causal LM
    scores = []
    for target in targets:
        model = open_model(spec_ref(str(target)), cfg).eval()
        spec = spec_of(model)
        count = sum(p.numel() for p in model.parameters())
        for variant in ("none", method) if method is not None else ("none",):
            if variant != "none":
                quantize_model(model, variant)  # in place, after the fp32 row: one copy of the weights
            name = str(target) if variant == "none" else f"{target} ({variant})"
            row = Score(name, spec.type, spec.protocol, count, quantize=variant)
            model.to(runtime.device)
            with runtime.inference():
                if spec.protocol == "causal-lm":
                    text = text if text is not None else read_text(cfg, data, data_format, max_bytes)
                    tok = tokenizer or text_tokenizer(model, target)
                    row.metrics = score_lm(model, tok, text, runtime, context, batch_size)
                else:
                    row.metrics = score_classifier(model, cfg, data, data_format, runtime)
            model.to("cpu")
            if method is not None:
                row.metrics["weights_mb"] = weight_bytes(model) / 1e6
            scores.append(row)
    return scores


def read_text(cfg: Config, data: str | Path, data_format: str | None, max_bytes: int | None) -> str:
    """The text of ``data`` (through its data source), cut to ``max_bytes`` at a character boundary."""
    parts = open_data(cfg.registry, data, "causal-lm", data_format=data_format)
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, RecordSource):  # documents, one blank line apart
            for where, record in part.records():
                if not isinstance(record, str):
                    raise DataError(f"{where}: zoo eval scores text, not conversations; give documents or a text file")
                pieces.append(record + "\n\n")
        else:
            pieces.extend(iter_texts([part]))
    text = "".join(pieces)
    raw = text.encode("utf-8")
    if max_bytes is not None and len(raw) > max_bytes:
        text = raw[:max_bytes].decode("utf-8", errors="ignore")
    return text


def score_lm(
    model: nn.Module, tokenizer: Tokenizer, text: str, runtime: Runtime, context: int | None, batch_size: int
) -> dict[str, float]:
    """Loss over every token but the first, in windows of ``context`` tokens that do not overlap
    (the caller holds `Runtime.inference`)."""
    if not isinstance(model, CausalLM):
        raise ZooError(f"{type(model).__name__} is not a causal LM (zoo.protocols.CausalLM)")
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    if len(ids) < 2:
        raise DataError("the text is shorter than two tokens; give more text")
    if int(ids.max()) >= int(model.vocab_size):
        raise DataError(f"the tokenizer gives id {int(ids.max())}, past the model's vocab_size {model.vocab_size}")
    length = min(context or int(model.max_seq_len), int(model.max_seq_len))
    starts = list(range(0, len(ids) - 1, length))
    nll, count = 0.0, 0
    full = [s for s in starts if s + length + 1 <= len(ids)]
    groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in starts if s not in set(full)]  # the last, shorter window alone
    for group in groups:
        rows = torch.stack([ids[s : s + length + 1] for s in group])
        x, y = runtime.to_device((rows[:, :-1], rows[:, 1:]))
        logits, _ = model(x)
        nll += float(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum"))
        count += int(y.numel())
    n_bytes = len(text.encode("utf-8"))
    loss = nll / count
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "bits_per_byte": nll / math.log(2) / n_bytes,
        "tokens": float(count),
        "bytes": float(n_bytes),
    }


def score_classifier(
    model: nn.Module, cfg: Config, data: str | Path, data_format: str | None, runtime: Runtime
) -> dict[str, float]:
    spec = spec_of(model)
    examples = open_data(cfg.registry, data, "classifier", data_format=data_format)
    if isinstance(spec, ClassifierSpec) and examples.input_shape != tuple(spec.input_shape):
        raise DataError(f"{data} holds examples of shape {examples.input_shape}; the model takes {spec.input_shape}")
    try:
        loss, accuracy = classification_scores(model, examples, runtime)
    except DataError as err:
        raise DataError(f"{data}: {err}") from None
    return {"loss": loss, "accuracy": accuracy, "examples": float(len(examples.y))}
