"""Conformance checks a plugin author runs against their own components.

    # tests/test_conformance.py of a plugin package
    import zoo.testing

    def test_my_plugin():
        zoo.testing.check_plugin("my-zoo-plugin")     # every model, sampler and trainer it registers

or one component at a time: `check_model("my-type")`, `check_sampler(...)`, `check_trainer(...)`,
`check_optimizer(...)`, `check_schedule(...)`, `check_spec_class(MySpec)`,
`check_hook_module("my_plugin.hooks")`; `check_onnx_decoding(model, folder, prompt)` after ``zoo
export --format onnx``. Each raises ``AssertionError`` saying what broke and how to fix it. zoo
runs `check_plugin` over every
installed distribution in its own test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.build import check_protocol, model_spec
from zoo.config import Config, default_config
from zoo.errors import ZooError
from zoo.protocols import (
    Callback,
    CausalLM,
    ClassifierSpec,
    HFExportable,
    Logger,
    PastTensors,
    Sampler,
    Schedule,
    StaticDecoding,
    Trainer,
)
from zoo.registry import normalize
from zoo.specs import BASES, ModelSpec, OptimizerSpec, SamplerSpec, ScheduleSpec, Spec, TrainerSpec
from zoo.tags import attach, tokenizer_of

Ref = str | Mapping[str, Any] | Spec


def _config(config: Config | None) -> Config:

    return config or default_config()


# --------------------------------------------------------------------------- specs and hooks


def check_spec_class(spec_cls: type[Spec]) -> None:
    """Strict pydantic: unknown fields rejected, every field documented, JSON round trip, schema."""
    base = next((b for b in BASES.values() if issubclass(spec_cls, b)), None)
    assert base is not None, (
        f"{spec_cls.__name__} must subclass one of zoo.{', zoo.'.join(b.__name__ for b in BASES.values())}"
    )
    assert spec_cls.model_config.get("extra") == "forbid", f"{spec_cls.__name__}: keep extra='forbid' from the base"
    annotation = spec_cls.model_fields["type"].annotation
    assert typing.get_origin(annotation) is typing.Literal, f"{spec_cls.__name__}.type must be a Literal"
    undocumented = [n for n, f in spec_cls.model_fields.items() if n != "type" and not f.description]
    assert not undocumented, f"{spec_cls.__name__}: give Field(description=...) to {', '.join(undocumented)}"
    example = example_spec(spec_cls)
    again = spec_cls.model_validate_json(example.model_dump_json())
    assert again == example, (
        f"{spec_cls.__name__}: spec does not survive a JSON round trip; use JSON types (str, numbers, lists...)"
    )
    schema = spec_cls.model_json_schema()
    assert schema.get("additionalProperties") is False, f"{spec_cls.__name__}: schema must forbid extra keys"


def example_spec(spec_cls: type[Spec]) -> Spec:
    return spec_cls.example()


def check_hook_module(module: str) -> None:
    """Importing a plugin's hook module must not import torch or transformers (keeps `zoo list` fast)."""
    code = (
        f"import sys, importlib\nimportlib.import_module({module!r})\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, f'imports {heavy} at import time; import them inside build()'\n"
    )
    paths = [os.environ.get("PYTHONPATH", ""), *sys.path]  # import it as this process would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, f"hook module {module}: {res.stderr.strip().splitlines()[-1] if res.stderr else '?'}"


# --------------------------------------------------------------------------- models


def example_batch(spec: ModelSpec, model: Any, batch: int = 2, seq: int = 8) -> Any:
    """A small valid input for this model: (B, *input_shape) floats in [0, 1) for feature and image
    classifiers, token ids otherwise."""
    import torch

    g = torch.Generator().manual_seed(0)
    if spec.protocol == "classifier":
        assert isinstance(spec, ClassifierSpec), (
            f"{spec.type}: a classifier's spec states input_shape, num_classes and input_fields() "
            "(zoo.ClassifierSpec); add them to the spec class"
        )
        if spec.input_kind != "tokens":
            return torch.rand(batch, *spec.input_shape, generator=g)
        return torch.randint(0, 2, (batch, seq), generator=g)  # ids below 2 fit any vocabulary
    assert isinstance(model, CausalLM), (
        f"{spec.type}: a causal LM needs new_cache(), max_seq_len and vocab_size (zoo.CausalLM)"
    )
    return torch.randint(0, int(model.vocab_size), (batch, min(seq, int(model.max_seq_len))), generator=g)


def logits_of(model: Any, x: Any) -> Any:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


def supported_precisions() -> list[str]:
    """fp32 everywhere, bf16-mixed on CPU and bf16 GPUs, fp16-mixed on CUDA."""
    import torch

    found = ["fp32", "bf16-mixed"]
    if torch.cuda.is_available():
        found.append("fp16-mixed")
        if not torch.cuda.is_bf16_supported():
            found.remove("bf16-mixed")
    return found


def check_model(ref: Ref, *, config: Config | None = None, precisions: list[str] | None = None) -> None:
    """Build on CPU in fp32, forward, backward, one train step per precision, save/load identity,
    and for causal LMs the protocol and KV-cache agreement."""
    import torch

    from zoo.artifacts import load, save
    from zoo.runtime import Runtime

    cfg = _config(config)
    spec = model_spec(ref, config=cfg)
    check_spec_class(type(spec))
    torch.manual_seed(0)
    model = attach(spec.build(), spec)
    assert isinstance(model, torch.nn.Module), f"{spec.type}: build() must return a torch.nn.Module"
    params = list(model.parameters())
    assert params, f"{spec.type}: model has no parameters; register weights as nn.Parameter or submodules"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params), (
        f"{spec.type}: build() must return an fp32 model on the CPU (the runtime moves it)"
    )
    x = example_batch(spec, model)
    for precision in precisions or supported_precisions():
        runtime = Runtime(device="auto", precision=precision)
        model.to(runtime.device).train()
        scaler = runtime.grad_scaler()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        before = [p.detach().clone() for p in model.parameters()]
        with runtime.autocast():
            logits = logits_of(model, runtime.to_device(x))
        assert logits.shape[0] == x.shape[0], f"{spec.type}: batch dimension lost, got {tuple(logits.shape)}"
        loss = logits.float().logsumexp(-1).mean()
        assert torch.isfinite(loss), (
            f"{spec.type}: non-finite output under {precision}; keep softmax and norms in fp32 under autocast"
        )
        scaler.scale(loss).backward()
        reached = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters() if p.requires_grad]
        assert any(reached), (
            f"{spec.type}: no gradient reached the parameters under {precision}; does forward() detach or use no_grad?"
        )
        scaler.step(opt)
        scaler.update()
        moved = any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
        assert moved, f"{spec.type}: an optimizer step under {precision} changed nothing; are the parameters frozen?"
        opt.zero_grad(set_to_none=True)
    model.to("cpu").eval()
    with torch.no_grad():
        expected = logits_of(model, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = save(model, Path(tmp) / "artifact", config=cfg)
        loaded = load(path, config=cfg)
    with torch.no_grad():
        got = logits_of(loaded, x)
    assert torch.equal(got, expected), (
        f"{spec.type}: save/load changed the outputs; keep what forward() uses in parameters and persistent buffers"
    )
    if spec.protocol == "causal-lm":
        check_causal_lm(model)
    if isinstance(model, HFExportable):
        check_hf_mapping(model)


def check_hf_mapping(model: Any) -> None:
    """`zoo.HFExportable`: ``hf_import(hf_export()[1])`` gives back every tensor of the state dict."""
    import torch

    name = type(model).__name__
    try:
        fields, tensors = model.hf_export()
    except ZooError:
        return  # this configuration has no Hugging Face equivalent; the error says which field
    assert isinstance(fields.get("model_type"), str), f"{name}.hf_export(): the config fields need a model_type"
    state = model.state_dict()
    back = model.hf_import(tensors)
    assert set(back) == set(state), f"{name}: hf_import(hf_export()) misses {sorted(set(state) - set(back))[:5]}"
    changed = [k for k in state if not torch.equal(back[k].to(state[k].dtype), state[k].cpu())]
    assert not changed, f"{name}: hf_import(hf_export()) changed {changed[:5]}"


def check_causal_lm(model: Any, *, atol: float = 1e-4) -> None:
    """The causal-LM protocol: ``new_cache``, ``(logits, cache)``, incremental == full logits,
    and left padding (with an attention mask) leaves a sequence's logits unchanged."""
    import torch

    name = type(model).__name__
    assert isinstance(model, CausalLM), f"{name}: causal LMs need new_cache, max_seq_len, vocab_size (zoo.CausalLM)"
    vocab, ctx = int(model.vocab_size), min(int(model.max_seq_len), 12)
    ids = torch.randint(0, vocab, (2, ctx), generator=torch.Generator().manual_seed(1))
    model.eval()  # type: ignore[attr-defined]  # an nn.Module
    with torch.no_grad():
        full, cache = model(ids)
        assert full.shape == (2, ctx, vocab), f"{name}: logits must be (B, T, vocab), got {tuple(full.shape)}"
        cache = model.new_cache(2, ctx)
        half = ctx // 2
        parts = [model(ids[:, :half], cache)[0]]
        parts += [model(ids[:, t : t + 1], cache)[0] for t in range(half, ctx)]
        assert cache.length == ctx, (
            f"{name}: cache.length is {cache.length} after {ctx} tokens; call cache.advance per forward"
        )
        stepped = torch.cat(parts, 1)
        assert torch.allclose(stepped, full, atol=atol), (
            f"{name}: logits decoded through the cache differ from a full forward by "
            f"{(stepped - full).abs().max().item():.2e}"
        )
        pad = 3
        padded = torch.cat([torch.zeros(2, pad, dtype=ids.dtype), ids[:, : ctx - pad]], 1)
        mask = torch.cat([torch.zeros(2, pad, dtype=torch.long), torch.ones(2, ctx - pad, dtype=torch.long)], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out, _ = model(padded, model.new_cache(2, ctx), attention_mask=mask, position_ids=positions)
        alone, _ = model(ids[:, : ctx - pad])
        assert torch.allclose(out[:, pad:], alone, atol=atol), (
            f"{name}: left padding changed the logits; mask padded keys and use position_ids (zoo.attention_mask_4d)"
        )
        if isinstance(model, StaticDecoding):  # the static path agrees with the dynamic one
            cache = model.new_cache(2, ctx)
            model(ids[:, :half], cache)
            full_mask = torch.ones(2, ctx, dtype=torch.long)
            static = [
                model.decode_step(ids[:, t : t + 1], cache, full_mask, torch.full((2, 1), t), torch.tensor([t]))
                for t in range(half, ctx)
            ]
            assert torch.allclose(torch.cat(static, 1), full[:, half:], atol=atol), (
                f"{name}: decode_step disagrees with forward through the cache"
            )
        if isinstance(model, PastTensors):
            _check_past_tensors(model, ids, full, atol)


def _check_past_tensors(model: Any, ids: Any, full: Any, atol: float) -> None:
    """``forward_with_past`` from no past, then one token at a time, equals a full forward."""
    import torch

    name, layout = type(model).__name__, model.past_layout()
    if layout is None:
        return
    layers, heads, head_dim = layout
    past = [ids.new_zeros((ids.shape[0], heads, 0, head_dim), dtype=full.dtype)] * (2 * layers)
    half = ids.shape[1] // 2
    first, past = model.forward_with_past(ids[:, :half], past)
    parts = [first]
    for t in range(half, ids.shape[1]):
        logits, past = model.forward_with_past(ids[:, t : t + 1], past)
        parts.append(logits)
    want = (ids.shape[0], heads, ids.shape[1], head_dim)
    assert len(past) == 2 * layers and all(tuple(p.shape) == want for p in past), (
        f"{name}: forward_with_past must return 2 x {layers} tensors shaped {want} (past_layout())"
    )
    assert torch.allclose(torch.cat(parts, 1), full, atol=atol), f"{name}: forward_with_past disagrees with forward"


def check_onnx_decoding(model: Any, folder: str | Path, prompt: Any, steps: int = 8, *, atol: float = 1e-4) -> None:
    """What ``zoo export --format onnx`` wrote to ``folder`` decodes in onnxruntime as ``model``
    does in torch: model.onnx's prefill logits, then ``steps`` greedy tokens through
    decoder_with_past.onnx (each step's logits against a full forward), the very tokens
    `zoo.generate` picks greedily. ``prompt``: token ids (B, T)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from zoo.lm.generation import generate
    from zoo.lm.tokenizers import ByteTokenizer

    folder = Path(folder)
    meta = json.loads((folder / "onnx.json").read_text())
    assert set(meta["files"]) == {"model.onnx", "decoder_with_past.onnx"}, f"no decoder with past: {meta}"
    prefill = ort.InferenceSession(str(folder / "model.onnx"))
    step = ort.InferenceSession(str(folder / "decoder_with_past.onnx"))
    names = list(meta["files"]["decoder_with_past.onnx"]["inputs"])[2:]  # past_key_0, past_value_0, ...
    ids = torch.as_tensor(prompt)
    model.eval()
    with torch.no_grad():
        logits, *kv = prefill.run(None, {"input_ids": ids.numpy()})
        np.testing.assert_allclose(logits, model(ids)[0].numpy(), atol=atol, err_msg="model.onnx (prefill)")
        mask, tokens = np.ones(tuple(ids.shape), dtype=np.int64), []
        token = logits[:, -1].argmax(-1)[:, None]
        for n in range(steps):
            tokens.append(token[:, 0])
            mask = np.concatenate([mask, np.ones((len(mask), 1), dtype=np.int64)], axis=1)
            feed = {"input_ids": token, "attention_mask": mask, **dict(zip(names, kv, strict=True))}
            logits, *kv = step.run(None, feed)
            so_far = torch.cat([ids, torch.from_numpy(np.stack(tokens, 1))], dim=1)
            want = model(so_far)[0][:, -1:].numpy()
            np.testing.assert_allclose(logits, want, atol=atol, err_msg=f"decoder_with_past.onnx, step {n + 1}")
            token = logits[:, -1].argmax(-1)[:, None]
    assert kv[0].shape[2] == ids.shape[1] + steps, "the presents must grow by one position per step"
    tokenizer = tokenizer_of(model) or ByteTokenizer()  # prompts are ids: only its pad id is used
    want_ids = generate(model, tokenizer, ids.tolist(), "greedy", max_new_tokens=steps, eos_ids=[]).ids
    assert np.stack(tokens, 1).tolist() == want_ids, "onnxruntime's greedy tokens differ from zoo.generate's"


# --------------------------------------------------------------------------- samplers


def check_sampler(ref: Ref, *, config: Config | None = None) -> None:
    """Valid ids of shape (B,), never a token whose logit is -inf, the same picks for the same seed."""
    import torch

    cfg = _config(config)
    spec = cfg.spec("samplers", ref)
    assert isinstance(spec, SamplerSpec)
    check_spec_class(type(spec))
    sampler = spec.build()
    assert isinstance(sampler, Sampler), (
        f"{spec.type}: build() must return a zoo.Sampler: select(logits, seen, generators) and needs_seen"
    )
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 50, generator=g) * 3
    logits[:, 40:] = float("-inf")
    seen = torch.zeros(16, 50, dtype=torch.bool)
    rows = logits.shape[0]
    picks = [
        sampler.select(logits.clone(), seen, [torch.Generator().manual_seed(s + i) for i in range(rows)])
        for s in (7, 7, 8)
    ]
    first = picks[0]
    assert first.shape == (16,) and first.dtype == torch.long, f"{spec.type}: select() must return (B,) int64 ids"
    assert bool(((first >= 0) & (first < 40)).all()), (
        f"{spec.type}: picked a token whose logit is -inf; draw from softmax probabilities (zoo.draw)"
    )
    assert torch.equal(first, picks[1]), (
        f"{spec.type}: the same seed gave different tokens; draw with the generators given (zoo.draw)"
    )


# --------------------------------------------------------------------------- trainers


def _shrunk(spec: TrainerSpec, model: Any, config: Config) -> TrainerSpec:
    small: dict[str, Any] = {
        "max_steps": 2,
        "batch_size": 4,
        "grad_accum": 1,
        "eval_every": 2,
        "eval_batches": 1,
        "log_every": 1,
        "checkpoint_every": 0,
        "progress": False,
    }
    if "context" in type(spec).model_fields:
        small["context"] = min(16, int(model.max_seq_len)) if isinstance(model, CausalLM) else 16
    data = spec.model_dump()
    data.update({k: v for k, v in small.items() if k in type(spec).model_fields})
    if "schedule" in data:  # no warmup: two steps are shorter than most
        schedule = config.spec("schedules", data["schedule"])
        if "warmup_steps" in type(schedule).model_fields:
            data["schedule"] = {**schedule.model_dump(), "warmup_steps": 0}
    return type(spec).model_validate(data)


def trainable_models(spec: TrainerSpec, config: Config, distribution: str | None = None) -> list[type[ModelSpec]]:
    """Model spec classes this trainer can train: ``distribution``'s own first (sorted by type),
    then every other installed one, so a plugin is checked with its own models when it has any."""

    entries = sorted(config.registry.types("models").values(), key=lambda e: e.type)
    fits = [
        e
        for e in entries
        if e.spec_cls.protocol == spec.protocol
        and (spec.protocol != "classifier" or e.spec_cls.input_kind in spec.input_kinds)  # type: ignore[attr-defined]
    ]
    own = [e for e in fits if distribution is not None and normalize(e.distribution) == normalize(distribution)]
    return [e.spec_cls for e in own + [e for e in fits if e not in own]]  # type: ignore[misc]


def check_trainer(
    ref: Ref, *, model: Ref | None = None, config: Config | None = None, distribution: str | None = None
) -> None:
    """Build, run two steps on a small model of the trainer's protocol (``model``, else one of
    ``distribution``'s own models, else any installed one), and load the saved model."""
    from zoo.artifacts import load, save
    from zoo.runtime import Runtime

    cfg = _config(config)
    spec = cfg.spec("trainers", ref)
    assert isinstance(spec, TrainerSpec)
    check_spec_class(type(spec))
    if model is None:
        matching = trainable_models(spec, cfg, distribution)
        kinds = "" if spec.protocol != "classifier" else f" taking {' or '.join(spec.input_kinds)}"
        assert matching, (
            f"{spec.type}: no installed model speaks {spec.protocol}{kinds}; register one in your plugin, "
            "or pass model=... to check_trainer"
        )
        mspec: ModelSpec = example_spec(matching[0])  # type: ignore[assignment]
    else:
        mspec = model_spec(model, config=cfg)
    check_protocol(spec, mspec, config=cfg)
    module = attach(mspec.build(), mspec)
    small = _shrunk(spec, module, cfg)
    trainer = small.build()
    assert isinstance(trainer, Trainer), f"{spec.type}: build() must return a zoo.Trainer (an object with fit())"
    with tempfile.TemporaryDirectory() as tmp:
        result = trainer.fit(
            module,
            Runtime(device="cpu"),
            Path(tmp) / "run",
            save_artifact=lambda p, trained: save(trained, p, config=cfg, overwrite=True),
            config=cfg,
        )
        assert result.steps == 2, f"{spec.type}: ran {result.steps} steps, asked for 2; stop at spec.max_steps"
        assert result.artifact is not None, f"{spec.type}: fit() must save the model through save_artifact"
        load(result.artifact, config=cfg)


def check_logger(ref: Ref, *, config: Config | None = None) -> None:
    """Build; start a run, log training and validation records, close; start again as a resumed run."""

    spec = _config(config).spec("loggers", ref)
    check_spec_class(type(spec))
    with tempfile.TemporaryDirectory() as tmp:
        for start in (0, 2):
            logger = spec.build()
            assert isinstance(logger, Logger), f"{spec.type}: build() must return a zoo.Logger (start, log, close)"
            logger.start(Path(tmp), start)
            for step in range(start + 1, start + 3):
                logger.log({"step": step, "split": "train", "loss": 1.0 / step, "lr": 1e-3, "grad_norm": 0.5})
                logger.log({"step": step, "split": "val", "val_loss": 1.5 / step})
            logger.log({"step": start + 2, "split": "event", "event": "stopped", "reason": "a check"})
            logger.close()


class _Run:
    """A stand-in `zoo.TrainingRun` for the callback check: a tiny model that really trains."""

    def __init__(self, out: Path) -> None:
        import torch

        self.out, self.step, self.max_steps, self.loss, self.is_main = out, 0, 10, 1.0, True
        self.metrics: dict[str, float] = {}
        self.asked: list[str] = []
        self.added: dict[str, Any] = {}
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def train_step(self) -> None:
        import torch

        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(self.step))
        loss = self.model(x).square().mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step, self.loss = self.step + 1, float(loss)

    def save_checkpoint(self, name: str) -> None:
        self.asked.append(name)

    def add_model(self, name: str, model: Any) -> None:
        self.added[name] = model


def check_callback(ref: Ref, *, config: Config | None = None) -> None:
    """Build; see steps (of a model that really trains) and evaluations (val_loss, val_accuracy,
    val_ppl); its state, tensors included, survives a checkpoint's round trip; it hears the end."""
    from zoo.trainers.run import join_tensors, split_tensors

    spec = _config(config).spec("callbacks", ref)
    check_spec_class(type(spec))
    callback = spec.build()
    assert isinstance(callback, Callback), f"{spec.type}: build() must return a zoo.Callback (subclass it)"
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(Path(tmp))
        for step in range(1, 5):
            run.train_step()
            callback.on_step_end(run)
            figures = {"val_loss": 1.0 + step % 2, "val_accuracy": 0.5, "val_ppl": 2.7}
            run.metrics.update(figures)
            callback.on_eval(run, figures)
            why = callback.should_stop(run)
            assert why is None or isinstance(why, str), f"{spec.type}: should_stop returns a reason (str) or None"
        tensors: dict[str, Any] = {}
        try:
            saved = json.loads(json.dumps(split_tensors(callback.state_dict(), "0", tensors)))
        except (TypeError, ValueError) as err:
            raise AssertionError(
                f"{spec.type}: state_dict() must hold JSON values and tensors (checkpoints keep it): {err}"
            ) from None
        fresh = spec.build()
        fresh.load_state_dict(join_tensors(saved, tensors, spec.type))
        again: dict[str, Any] = {}
        assert split_tensors(fresh.state_dict(), "0", again) == saved and all(
            again[k].equal(v) for k, v in tensors.items()
        ), f"{spec.type}: load_state_dict(state_dict()) must restore the same state"
        callback.on_train_end(run)
        for name, model in run.added.items():
            assert hasattr(model, "state_dict"), f"{spec.type}: add_model({name!r}, ...) takes a torch module"


def _toy_problem(seed: int = 0) -> tuple[Any, Any, Any]:
    """A small MLP (two hidden matrices: something for Muon-like optimizers; biases and a norm:
    1-D parameters) and a fixed regression batch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(seed + 1)
    return model, torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)


def _optimizer_steps(optimizer: Any, model: Any, x: Any, y: Any, steps: range, max_steps: int) -> None:
    """``steps`` of the engine's loop: each group's lr set from its peak_lr and a cosine factor."""
    import math

    for step in steps:
        factor = 0.5 * (1 + math.cos(math.pi * step / max_steps))
        for group in optimizer.param_groups:
            group["lr"] = group.get("peak_lr", 1e-2) * factor
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def check_optimizer(ref: Ref, *, config: Config | None = None, steps: int = 4) -> None:
    """Build on a small MLP; a step moves the parameters and reads each group's ``lr`` (the
    engine sets it from the schedule); the state survives a checkpoint (tensors and numbers, as
    zoo writes them) and a run resumed from it continues exactly as an uninterrupted one."""
    import torch

    from zoo.checkpoints import OptimizerMeta, _flatten_optimizer, _unflatten_optimizer
    from zoo.trainers.engine import build_optimizer

    spec = _config(config).spec("optimizers", ref)
    assert isinstance(spec, OptimizerSpec)
    check_spec_class(type(spec))
    cpu = torch.device("cpu")
    model, x, y = _toy_problem()
    frozen = build_optimizer(spec, model, 1e-2, cpu)
    before = [p.detach().clone() for p in model.parameters()]
    for group in frozen.param_groups:
        group["lr"] = 0.0
    ((model(x) - y) ** 2).mean().backward()
    frozen.step()
    moved = [i for i, (b, p) in enumerate(zip(before, model.parameters(), strict=True)) if not torch.equal(b, p)]
    assert not moved, (
        f"{spec.type}: a step at lr 0 changed parameters; read group['lr'] in step() (the schedule sets it)"
    )

    model, x, y = _toy_problem()
    whole = build_optimizer(spec, model, 1e-2, cpu)
    _optimizer_steps(whole, model, x, y, range(2 * steps), 2 * steps)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)), (
        f"{spec.type}: {2 * steps} steps changed no parameter"
    )
    expected = [p.detach().clone() for p in model.parameters()]

    model, x, y = _toy_problem()
    first = build_optimizer(spec, model, 1e-2, cpu)
    _optimizer_steps(first, model, x, y, range(steps), 2 * steps)
    try:
        tensors, meta = _flatten_optimizer(first.state_dict())
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as err:
        raise AssertionError(
            f"{spec.type}: state_dict() must hold tensors, numbers and JSON values (checkpoints keep it): {err}"
        ) from None
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model, x, y = _toy_problem(seed=1)  # other weights: the loaded ones must replace them
    model.load_state_dict(weights)
    resumed = build_optimizer(spec, model, 1e-2, cpu)
    resumed.load_state_dict(
        _unflatten_optimizer({k: v.clone() for k, v in tensors.items()}, OptimizerMeta.model_validate(meta))
    )
    again, _ = _flatten_optimizer(resumed.state_dict())
    assert set(again) == set(tensors) and all(torch.equal(again[k], tensors[k]) for k in tensors), (
        f"{spec.type}: load_state_dict(state_dict()) did not restore the same state"
    )
    _, x, y = _toy_problem()
    _optimizer_steps(resumed, model, x, y, range(steps, 2 * steps), 2 * steps)
    differ = [n for (n, p), e in zip(model.named_parameters(), expected, strict=True) if not torch.equal(p, e)]
    assert not differ, (
        f"{spec.type}: a run resumed from a checkpoint differs from an uninterrupted one in {differ[:3]}; "
        "keep every piece of state (step counts, momenta) in state_dict()"
    )


def check_schedule(ref: Ref, *, config: Config | None = None) -> None:
    """Build; a factor that is a finite number >= 0 at every step of a run it accepts."""
    import math

    spec = _config(config).spec("schedules", ref)
    assert isinstance(spec, ScheduleSpec)
    check_spec_class(type(spec))
    schedule = spec.build()
    assert isinstance(schedule, Schedule), f"{spec.type}: build() must return a zoo.Schedule (factor(step, max_steps))"
    for max_steps in (1, 7, 100, 1000):
        fitted, _ = spec.for_steps(max_steps)  # what a trainer runs (zoo's warmups clip to the run)
        try:
            fitted.check_steps(max_steps)
        except ValueError:
            continue  # a run this schedule cannot serve: a trainer naming it is refused
        run = schedule if fitted is spec else fitted.build()
        factors = [run.factor(step, max_steps) for step in range(max_steps)]
        bad = [f for f in factors if not isinstance(f, int | float) or not math.isfinite(f) or f < 0]
        assert not bad, f"{spec.type}: factor() must be a finite number >= 0, got {bad[0]!r} at max_steps {max_steps}"


# --------------------------------------------------------------------------- plugins


def check_plugin(distribution: str, *, config: Config | None = None) -> None:
    """Everything a distribution registers passes its checks; its hook modules import no torch."""

    cfg = _config(config)
    plugins = [p for p in cfg.registry.plugins.values() if normalize(p.distribution) == normalize(distribution)]
    assert plugins, f"no plugin from distribution {distribution!r} is installed (is its entry point in group 'zoo'?)"
    for plugin in plugins:
        assert plugin.status == "loaded", f"{plugin.name} is {plugin.status}: {plugin.reason}"
        if plugin.module:
            check_hook_module(plugin.module)
        for kind, type_name in plugin.entries:
            entry = cfg.registry.entry(kind, type_name)
            example = example_spec(entry.spec_cls)
            if kind == "models":
                check_model(example, config=cfg)
            elif kind == "samplers":
                check_sampler(example, config=cfg)
            elif kind == "loggers":
                check_logger(example, config=cfg)
            elif kind == "callbacks":
                check_callback(example, config=cfg)
            elif kind == "optimizers":
                check_optimizer(example, config=cfg)
            elif kind == "schedules":
                check_schedule(example, config=cfg)
            else:
                check_trainer(example, config=cfg, distribution=plugin.distribution)
