"""50 plugin distributions at once, a dozen broken in each known way: the good ones load, every
bad one is reported with its reason, and the listing commands still answer quickly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from helpers import fake_plugin_site


def zoo_cli(site, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env)
    return res, time.perf_counter() - start


def test_fifty_plugins_some_broken(tmp_path):
    groups = fake_plugin_site(tmp_path / "site")
    res, _ = zoo_cli(tmp_path / "site", "plugins", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["distribution"]: r for r in json.loads(res.stdout) if r["distribution"].startswith("fakeplug-")}
    assert len(rows) == 50
    status = lambda i: rows[f"fakeplug-{i}"]  # noqa: E731
    for i in groups["good"] + groups["duplicate"]:
        assert status(i)["status"] == "loaded"
    for i in groups["import"]:
        assert status(i)["status"] == "failed" and "ImportError: needs a package" in status(i)["reason"]
    for i in groups["hook"]:
        assert status(i)["status"] == "failed" and "RuntimeError: hook exploded" in status(i)["reason"]
    for i in groups["spec"]:
        assert status(i)["status"] == "failed" and "must subclass zoo.ModelSpec" in status(i)["reason"]

    res, seconds = zoo_cli(tmp_path / "site", "list", "models", "--json")
    assert res.returncode == 0, res.stderr
    types = json.loads(res.stdout)["models"]["types"]
    assert {f"fake-{i}" for i in groups["good"][1:]} <= set(types)
    assert "fake-0" not in types  # contested by four distributions, none preferred
    assert "fakeplug-0 1.0 and fakeplug-47 1.47 and fakeplug-48 1.48 and fakeplug-49 1.49" in res.stderr
    assert {"simplenet", "minigpt"} <= set(types)  # the real plugins are untouched
    assert seconds < 10, f"zoo list took {seconds:.2f} s with 50 plugins"  # a hang guard; speed is in bench/
    print(f"\nzoo list with 50 fake plugins: {seconds:.3f} s")

    res, _ = zoo_cli(tmp_path / "site", "check")
    assert res.returncode == 2 and "model type 'fake-0' is registered by" in res.stderr


STOPPERS = {
    "exits": "import os\nos._exit(3)\n",
    "sleeps": "import time\ntime.sleep(1000)\n",
    "loops": "while True:\n    try:\n        pass\n    except Exception:  # swallows what it can\n        pass\n",
}


def test_a_plugin_that_exits_or_hangs_at_import_cannot_take_zoo_down(tmp_path):
    """Issue 27: `zoo --version` imports no plugin; `zoo --help` and `zoo plugins` answer, the latter
    naming each culprit, in about the plugin time limit each (1 s here)."""
    site = tmp_path / "site"
    site.mkdir()
    for name, code in STOPPERS.items():
        (site / f"stopper_{name}.py").write_text(code)
        info = site / f"stopper_{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: stopper-{name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[zoo]\nbad = stopper_{name}\n")
    env = {**os.environ, "PYTHONPATH": str(site), "ZOO_PLUGIN_TIMEOUT": "1"}

    def zoo(*args):
        run = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, timeout=60)
        assert "Traceback" not in run.stderr, run.stderr
        return run

    res = zoo("--version")
    assert res.returncode == 0 and res.stdout.startswith("zoo ")
    res = zoo("--help")
    assert res.returncode == 0 and all(f"    {c} " in res.stdout for c in ("list", "train", "generate", "plugins"))
    rows = {r["distribution"]: r for r in json.loads(zoo("plugins", "--json").stdout)}
    assert "os._exit(3)" in rows["stopper-exits"]["reason"]
    for name in ("sleeps", "loops"):
        assert rows[f"stopper-{name}"]["status"] == "failed"
        assert "still loading after 1 s ($ZOO_PLUGIN_TIMEOUT" in rows[f"stopper-{name}"]["reason"]
    assert rows["zoo-minigpt"]["status"] == "loaded"
