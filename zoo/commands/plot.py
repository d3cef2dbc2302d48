"""`zoo plot RUN`: a run's loss curves as a PNG and a table (registered by the core plugin)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zoo.errors import DataError, ZooError
from zoo.files import check_image_out, parse_json, read_text, validate_file_model


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
    out = check_image_out(args.out, "--out") if args.out else run / "loss.png"
    rows = read_metrics(run)
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
    save_figure(fig, out)
    print(loss_table(rows))
    print(f"wrote {out}")
    return 0


def save_figure(fig: Any, out: Path) -> None:
    """Write and close ``fig``; a write the OS refuses (a full disk, a permission) is one message."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(out, dpi=120)
    except (OSError, ValueError) as err:
        raise ZooError(f"{out}: cannot write the picture ({getattr(err, 'strerror', None) or err})") from None
    finally:
        plt.close(fig)


def plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a training run directory")
    p.add_argument("--out", help="output PNG (default: RUN/loss.png)")
