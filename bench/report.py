"""The figure tables of README.md and bench/README.md, rendered from the latest bench/results/*.json.

A table in either file sits between two markers naming its results file:

    <!-- results: suite -->
    | ... generated ... |
    <!-- /results -->

`python bench/report.py` rewrites every such table from its JSON; `--check` changes nothing and
exits 1 naming each table that no longer matches its results file (a test runs the check, so a
figure in the docs is always the one the last benchmark run wrote).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = (ROOT / "README.md", ROOT / "bench" / "README.md")
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The table of a results file: its ``rows``; for `zoo eval` scores, one row per model."""
    if "rows" in data:
        return list(data["rows"])
    return [{"model": s["model"], "parameters": s["parameters"], **s["metrics"]} for s in data.get("scores", [])]


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"{cell(float(value[0]))}-{cell(float(value[1]))}"
    return str(value).replace("|", "\\|")


def table(rows: list[dict[str, Any]]) -> list[str]:
    columns = [k for k, v in rows[0].items() if not isinstance(v, dict)]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return lines + ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]


def render(name: str) -> str:
    """Markdown tables of ``results/NAME.json`` (one per run of rows with the same columns; nested
    values left out), then its machine and date."""
    data = json.loads((RESULTS / f"{name}.json").read_text())
    groups: list[list[dict[str, Any]]] = []
    for r in rows_of(data):
        if groups and list(groups[-1][0]) == list(r):
            groups[-1].append(r)
        else:
            groups.append([r])
    lines: list[str] = []
    for group in groups:
        lines += [*table(group), ""]
    m = data.get("machine", {})
    where = f"{m.get('date', '?')}: {m.get('device', '?')}, torch {m.get('torch', '?')}"
    lines.append(f"*`bench/results/{name}.json`, {where}*")
    return "\n".join(lines) + "\n"


def refresh(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def stale(paths: tuple[Path, ...] = DOCS) -> list[str]:
    """``file: results NAME`` for every table that differs from what its results file renders."""
    out = []
    for path in paths:
        for m in BLOCK.finditer(path.read_text()):
            if m.group("body") != render(m.group("name")):
                out.append(f"{path.relative_to(ROOT)}: results {m.group('name')}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args()
    if args.check:
        bad = stale()
        for line in bad:
            print(f"stale: {line} (run python bench/report.py)")
        sys.exit(1 if bad else 0)
    for path in DOCS:
        path.write_text(refresh(path.read_text()))


if __name__ == "__main__":
    main()
