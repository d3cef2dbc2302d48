"""`zoo eval MODEL [MODEL ...] --data PATH`: the scores of `zoo.evaluate` side by side, as a table,
JSON or a bar chart (registered by the core plugin)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from zoo.commands.plot import save_figure
from zoo.config import config_from_args
from zoo.errors import ZooError
from zoo.evaluation import Score, evaluate
from zoo.files import check_image_out
from zoo.lm.tokenizers import named_tokenizer, tokenizer_argument
from zoo.specs import PRECISION_HELP, QUANTIZE_METHODS

METRICS = {"causal-lm": "bits_per_byte", "classifier": "accuracy"}  # what the bar chart shows

COLUMNS: tuple[tuple[str, str, str], ...] = (  # (metric, title, format)
    ("loss", "loss", ".4f"),
    ("perplexity", "ppl", ".2f"),
    ("bits_per_byte", "bits/byte", ".4f"),
    ("accuracy", "accuracy", ".4f"),
    ("tokens", "tokens", ",.0f"),
    ("examples", "examples", ",.0f"),
    ("weights_mb", "weights MB", ".1f"),
)


def table(scores: list[Score]) -> str:
    """The scores side by side, one model per line (a dash where a figure does not apply)."""
    scored = [s for s in scores if s.skipped is None]
    shown = [c for c in COLUMNS if any(c[0] in s.metrics for s in scored)]
    head = ["model", "type", "params", *(title for _, title, _ in shown)]
    rows = [
        [s.model, s.type, count(s.parameters)]
        + [format(s.metrics[k], f) if k in s.metrics else "-" for k, _, f in shown]
        for s in scored
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    aligned = [
        [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        for r in [head, *rows]
    ]
    skipped = [f"skipped {s.model} ({s.type}): {s.skipped}" for s in scores if s.skipped is not None]
    return "\n".join(["  ".join(r).rstrip() for r in aligned] + skipped)


def count(n: int) -> str:
    """A parameter count at a glance: 512, 12.3K, 842K, 10.8M, 1.24B."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def bar_chart(scores: list[Score], out: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ZooError("zoo eval --plot needs matplotlib: pip install 'zoo[plot]'") from None
    panels = [(p, m) for p, m in METRICS.items() if any(s.protocol == p and s.skipped is None for s in scores)]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 + 1.9 * len(scores), 3.8), squeeze=False)
    for ax, (protocol, metric) in zip(axes[0], panels, strict=True):
        mine = [s for s in scores if s.protocol == protocol and s.skipped is None]
        bars = ax.bar([s.model for s in mine], [s.metrics[metric] for s in mine], color="tab:blue")
        ax.bar_label(bars, fmt="%.3f")
        ax.set_ylabel(metric.replace("_", " ") + (" (lower is better)" if protocol == "causal-lm" else ""))
        ax.tick_params(axis="x", labelrotation=15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.plot:
        check_image_out(args.plot, "--plot")
    cfg = config_from_args(args, ("device", "precision"))
    for flag, value in (
        ("--max-bytes", args.max_bytes),
        ("--context", args.context),
        ("--batch-size", args.batch_size),
    ):
        if value is not None and value < 1:
            raise ZooError(f"{flag} {value}: must be at least 1")
    scores = evaluate(
        args.models,
        args.data,
        config=cfg,
        max_bytes=args.max_bytes,
        context=args.context,
        batch_size=args.batch_size,
        data_format=args.data_format,
        tokenizer=named_tokenizer(args.tokenizer, config=cfg) if args.tokenizer else None,
        quantize=args.quantize,
    )
    if args.json:
        print(json.dumps([asdict(s) for s in scores], indent=2))
    else:
        print(table(scores))
    if args.plot:
        bar_chart(scores, Path(args.plot), f"zoo eval on {Path(args.data).name}")
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL", help="artifacts, run folders, local model folders or presets")
    p.add_argument("--data", required=True, help="a text file/folder (causal LMs) or a classifier data file/folder")
    p.add_argument("--data-format", help="the data source to read --data with (zoo plugins lists them)")
    p.add_argument("--max-bytes", type=int, help="causal LMs: evaluate the first N bytes of the text only")
    p.add_argument("--context", type=int, help="causal LMs: window length in tokens (default: each model's maximum)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    tokenizer_argument(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--plot", metavar="PNG", help="write a bar chart: bits per byte (LMs), accuracy (classifiers)")
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_METHODS,
        default="none",
        help="int8: also score each model with int8 linear layers (CPU), beside its fp32 row",
    )
    p.add_argument("--device")
    p.add_argument("--precision", help=PRECISION_HELP)
