"""CLI commands for language models: generate, plot, export, import."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zoo.cli import spec_ref
from zoo.config import load_config
from zoo.errors import DataError, ZooError
from zoo.files import parse_json, read_text, shorten, validate_file_model
from zoo.specs import MAX_SEED


def cmd_generate(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    for flag in ("device", "precision"):
        if getattr(args, flag) is not None:
            overrides.append(f"runtime.{flag}={json.dumps(getattr(args, flag))}")
    cfg = load_config(args.registry, overrides)
    prompts = list(args.prompt or [])
    if args.prompt_file:
        text = read_text(Path(args.prompt_file), DataError)
        prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ZooError("give --prompt TEXT (repeatable) or --prompt-file FILE (one prompt per line)")
    from zoo.finetune import open_model
    from zoo.generation import generate, stream
    from zoo.runtime import Runtime

    model = open_model(spec_ref(args.path), cfg).eval()
    tokenizer = None  # the model's own (byte-level if it has none)
    runtime = Runtime(cfg.runtime)
    seed = args.seed if args.seed is not None else cfg.runtime.seed
    if not 0 <= seed <= MAX_SEED:
        raise ZooError(f"--seed {shorten(seed)}: must be between 0 and {MAX_SEED}")
    sampler = spec_ref(args.sampler)
    kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "stop": args.stop or (),
        "seed": seed,
        "runtime": runtime,
        "config": cfg,
        "static": args.static,
        "compile": args.compile,
    }
    if args.stream:
        if len(prompts) != 1 or args.json:
            raise ZooError("--stream prints one prompt's text as it is generated; give one --prompt, no --json")
        sys.stdout.write(prompts[0])
        for chunk in stream(model, tokenizer, prompts, sampler, **kwargs):
            sys.stdout.write(chunk.deltas[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    result = generate(model, tokenizer, prompts, sampler, **kwargs)
    if args.json:
        rows = [
            {"prompt": p, "text": t, "ids": i, "finish_reason": r}
            for p, t, i, r in zip(prompts, result.texts, result.ids, result.finish_reasons, strict=True)
        ]
        print(json.dumps(rows, indent=2))
    else:
        for p, t in zip(prompts, result.texts, strict=True):
            print(p + t)
            if len(prompts) > 1:
                print("-" * 40)
    return 0


class MetricRow(BaseModel):
    """One line of ``metrics.jsonl`` as `zoo plot` reads it (other keys are kept, unchecked)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    step: int = Field(ge=0, le=1 << 40)
    split: str = Field(max_length=40)
    loss: float | None = None
    val_loss: float | None = None


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise DataError(f"{path}: no metrics (is {run} a training run directory?)")
    rows = []
    for n, line in enumerate(read_text(path, DataError, limit=256 << 20).splitlines(), 1):
        if line.strip():
            where = f"{path}:{n}"
            row = validate_file_model(MetricRow, parse_json(line, where, DataError), where, DataError)
            rows.append(row.model_dump())
    return rows


def loss_table(rows: list[dict[str, Any]]) -> str:
    """Validation points with the latest training loss before each."""
    lines = [f"{'step':>6} {'train loss':>11} {'val loss':>9}"]
    train = None
    for r in rows:
        if r.get("split") == "train" and r.get("loss") is not None:
            train = r["loss"]
        elif r.get("split") == "val" and r.get("val_loss") is not None:
            shown = f"{train:.4f}" if train is not None else "-"
            lines.append(f"{r['step']:>6} {shown:>11} {r['val_loss']:>9.4f}")
    return "\n".join(lines)


def cmd_plot(args: argparse.Namespace) -> int:
    run = Path(args.run)
    rows = read_metrics(run)
    out = Path(args.out) if args.out else run / "loss.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ZooError("zoo plot needs matplotlib: pip install 'zoo[plot]'") from None
    train = [(r["step"], r["loss"]) for r in rows if r.get("split") == "train" and r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("split") == "val" and r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{run.name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(loss_table(rows))
    print(f"wrote {out}")
    return 0


def _zoo_hf() -> Any:
    try:
        from zoo_hf import convert
    except ImportError:
        raise ZooError("this command needs the zoo-hf plugin (and transformers): pip install zoo-hf") from None
    return convert


def cmd_export(args: argparse.Namespace) -> int:
    cfg = load_config(args.registry, args.set or ())
    from zoo.artifacts import load
    from zoo.finetune import artifact_folder

    model = load(artifact_folder(Path(args.path)) or args.path, config=cfg)
    convert = _zoo_hf()
    out = Path(args.out)
    hf: Any = getattr(model, "hf", None)  # hf-* adapters wrap a transformers model
    if model.zoo_spec.type == "minigpt":
        convert.export_hf(model, out, getattr(model, "zoo_tokenizer", None))
    elif hasattr(hf, "save_pretrained"):
        from zoo.artifacts import atomic_dir

        with atomic_dir(out) as tmp:
            hf.save_pretrained(tmp, safe_serialization=True)
    else:
        raise ZooError(f"model type {model.zoo_spec.type!r} has no Hugging Face export; minigpt and hf-* models do")
    print(f"wrote {out} (loadable with transformers' AutoModelForCausalLM.from_pretrained)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    cfg = load_config(args.registry, args.set or ())
    if args.as_ != "minigpt":
        raise ZooError(f"--as {args.as_!r}: only minigpt is supported (from GPT-2 weights)")
    from zoo.artifacts import save
    from zoo.rundir import check_out_path
    from zoo.tokenizers import load_tokenizer

    check_out_path(Path(args.out), [("the source folder", args.path)])
    model = _zoo_hf().import_hf(Path(args.path), cfg)
    folder = Path(args.path)
    tokenizer = load_tokenizer(folder, {"type": "bpe"}) if (folder / "tokenizer.json").is_file() else None
    save(model, args.out, tokenizer=tokenizer, config=cfg, overwrite=args.force)
    print(f"wrote {args.out} (a minigpt artifact)")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("export", parents=[common], help="export a saved model to another format")
    p.set_defaults(func=cmd_export)
    p.add_argument("path", help="a run directory or a saved model directory")
    p.add_argument("--format", choices=["hf"], default="hf")
    p.add_argument("--out", required=True)
    p = sub.add_parser("import", parents=[common], help="import a Hugging Face GPT-2 directory as a MiniGPT artifact")
    p.set_defaults(func=cmd_import)
    p.add_argument("path", help="a local transformers GPT-2 directory")
    p.add_argument("--as", dest="as_", default="minigpt")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p = sub.add_parser("generate", parents=[common], help="generate text from a trained causal LM")
    p.set_defaults(func=cmd_generate)
    p.add_argument("path", help="an artifact, a run folder, a local model folder (e.g. Hugging Face) or a preset")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable: a batch)")
    p.add_argument("--prompt-file", help="a file with one prompt per line")
    p.add_argument("--sampler", default="greedy", help="sampler preset or type (default: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="sampling seed (default: runtime.seed)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--json", action="store_true")
    p.add_argument("--static", action="store_true", help="decode with static shapes (the model's decode_step)")
    p.add_argument("--compile", action="store_true", help="torch.compile the static decode step (slow first call)")
    p.add_argument("--device")
    p.add_argument("--precision")
    p = sub.add_parser("plot", parents=[common], help="plot a run's loss curves to loss.png")
    p.set_defaults(func=cmd_plot)
    p.add_argument("run", help="a training run directory")
    p.add_argument("--out", help="output PNG (default: RUN/loss.png)")
