"""The prepared GPU script runs end to end on the CPU (tiny shapes), so it does not rot between
the sessions that have a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run():
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry-run"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for needle in (
        "train: minigpt eager",
        "hf gpt2 compiled",
        "zoo train (engine)",
        "fp16 + GradScaler",
        "decode batch 1: zoo, inference dtype, --compile",
        "decode batch 2: hf generate()",
    ):
        assert needle in res.stdout
    import json

    rows = json.loads((ROOT / "bench" / "results" / "gpu-dry-run.json").read_text())["rows"]
    fp16 = next(r for r in rows if "fp16" in r["what"])
    assert fp16["precision"] == "fp16-mixed" and fp16["tok/s"] > 0  # the fp16 row runs fp16, also on the CPU


def _bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_every_figure_table_in_the_docs_is_the_latest_results_file():
    report = _bench_module("report")
    assert report.stale() == [], "run python bench/report.py after a benchmark"
    blocks = [m.group("name") for p in report.DOCS for m in report.BLOCK.finditer(p.read_text())]
    assert {"suite", "eval_swap", "shakespeare-17", "generate_speed", "quantize_speed"} <= set(blocks)


def test_a_changed_result_makes_its_table_stale(tmp_path, monkeypatch):
    import json
    import shutil

    report = _bench_module("report")
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS, results)
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- results: suite -->\n<!-- /results -->\nend\n")
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.stale((doc,)) == ["README.md: results suite"]  # never rendered
    doc.write_text(report.refresh(doc.read_text()))
    assert report.stale((doc,)) == [] and doc.read_text().startswith("intro\n") and doc.read_text().endswith("end\n")
    data = json.loads((results / "suite.json").read_text())
    data["rows"][0]["zoo"] *= 1.5  # a new benchmark run
    (results / "suite.json").write_text(json.dumps(data))
    assert report.stale((doc,)) == ["README.md: results suite"]


def test_benchmarks_interleave_their_rounds_and_pair_the_ratios():
    common = _bench_module("common")
    calls: list[str] = []
    values = {"zoo": iter([1.0, 2.0, 4.0, 8.0]), "peer": iter([2.0, 2.0, 2.0, 2.0])}

    def measure(name: str):
        return lambda: calls.append(name) or next(values[name])

    rounds = common.interleave({"zoo": measure("zoo"), "peer": measure("peer")}, rounds=3, warmup=1)
    assert calls == ["zoo", "peer"] * 4  # one warm-up round, then zoo, peer, zoo, peer, ...
    assert rounds == {"zoo": [2.0, 4.0, 8.0], "peer": [2.0, 2.0, 2.0]}
    ratio = common.paired_ratio(rounds["zoo"], rounds["peer"], higher_is_better=True)
    assert ratio == {"median": 2.0, "min": 1.0, "max": 4.0}
    assert common.paired_ratio([1.0], [2.0], higher_is_better=False)["median"] == 2.0  # seconds: less is better


def test_the_learning_benchmark_alternates_which_recipe_trains_first(monkeypatch):
    shakespeare = _bench_module("shakespeare")
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(shakespeare, "run", lambda name, data, steps: calls.append((name, steps)) or {"name": name})
    runs = shakespeare.sittings(["baseline", "fast"], "text", 2000, rounds=3)
    assert calls[:2] == [("baseline", 200), ("fast", 200)]  # an unmeasured short run of each first
    assert [name for name, _ in calls[2:]] == ["baseline", "fast", "fast", "baseline", "baseline", "fast"]
    assert {name: len(rs) for name, rs in runs.items()} == {"baseline": 3, "fast": 3}
