"""Helpers shared by the benchmarks: machine description, timing, result tables."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def interleave(fns: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Each round calls every function once, in order (zoo, peer, zoo, peer, ...), so both sides
    see the same machine state; each call returns one measurement (seconds, or a rate). ``warmup``
    unmeasured rounds first. Returns every measurement per name, round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(fn())
    return out


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratio(ours: list[float], theirs: list[float], higher_is_better: bool) -> dict[str, float]:
    """zoo's advantage round by round (each ratio from one interleaved round), as `spread`."""
    pairs = zip(ours, theirs, strict=True)
    return spread([o / t if higher_is_better else t / o for o, t in pairs])


def fmt_range(s: dict[str, float]) -> str:
    """A `spread` of ratios as "min-max"."""
    return f"{s['min']:.2f}-{s['max']:.2f}"


def timed(fn: Callable[[], Any]) -> Callable[[], float]:
    """``fn`` as a measurement: the seconds one call takes."""

    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def median_rate(fn: Callable[[], int], rounds: int) -> float:
    """Median of units/second over ``rounds`` calls of ``fn`` (which returns units done)."""
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        units = fn()
        rates.append(units / (time.perf_counter() - start))
    return statistics.median(rates)


def write_result(name: str, table: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "rows": table, **(extra or {})}, indent=2) + "\n")
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(width[c]) for c in cols))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)
