"""The command line: exit codes, --json outputs, and no torch import for listing commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zoo.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_json(capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    code, out, _ = run(capsys, "list", "models", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["models"]["types"]["simplenet"]["distribution"] == "zoo-simplenet"
    assert data["models"]["presets"]["simplenet-small"]["type"] == "simplenet"
    assert (
        data["models"]["presets"]["simplenet-small"]["origin"]
        == f"zoo-simplenet {data['models']['types']['simplenet']['version']}"
    )


def test_show_params_on_meta_device(capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    code, out, _ = run(capsys, "show", "simplenet-small", "--params", "--json")
    data = json.loads(out)
    assert code == 0 and data["type"] == "simplenet"
    assert data["params"]["parameters"] == 20 * 64 + 64 + 64 * 64 + 64 + 64 * 4 + 4
    assert {f["name"] for f in data["fields"]} >= {"in_features", "hidden", "activation"}


def test_plugins_json(capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    code, out, _ = run(capsys, "plugins", "--json")
    rows = {r["distribution"]: r for r in json.loads(out)}
    assert code == 0 and rows["zoo-simplenet"]["status"] == "loaded"
    assert "model:simplenet" in rows["zoo-simplenet"]["entries"]


def test_bad_input_exits_2_without_traceback(capsys, root, monkeypatch, tmp_path):
    monkeypatch.chdir(root)
    code, _, err = run(capsys, "show", "simplnet")
    assert code == 2 and "did you mean 'simplenet'" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.x\n")
    code, _, err = run(capsys, "check", str(bad))
    assert code == 2 and "invalid TOML" in err
    code, _, err = run(
        capsys,
        "train",
        "--model",
        "simplenet-small",
        "--trainer",
        "classifier-quick",
        "--out",
        str(tmp_path / "o"),
        "--set",
        "trainers.classifier-quick.lr=-1",
    )
    assert code == 2 and "trainers.classifier-quick.lr" in err
    assert not (tmp_path / "o").exists()


def test_check_ok_and_schema(capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    code, out, _ = run(capsys, "check", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    code, out, _ = run(capsys, "schema")
    assert code == 0 and json.loads(out)["title"] == "zoo registry.toml"


def test_train_then_refuse_then_resume(capsys, root, monkeypatch, tmp_path):
    monkeypatch.chdir(root)
    args = [
        "train",
        "--model",
        "simplenet-small",
        "--trainer",
        "classifier-quick",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "trainers.classifier-quick.max_steps=20",
        "--set",
        "trainers.classifier-quick.progress=false",
        "--set",
        "trainers.classifier-quick.schedule.warmup_steps=2",
    ]
    run_dir = tmp_path / "r"
    code, out, _ = run(capsys, *args)
    assert code == 0 and "model saved to" in out
    weights = (run_dir / "model" / "model.safetensors").read_bytes()

    def history():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["split"], r.get("loss"), r.get("val_loss")) for r in rows]

    metrics = history()
    code, _, err = run(capsys, *args)
    assert code == 2 and "--resume" in err
    assert (run_dir / "model" / "model.safetensors").read_bytes() == weights  # the refused run wrote nothing
    # a resume of a finished run continues from its last checkpoint: nothing left to train
    code, out, err = run(capsys, *args, "--resume")
    assert code == 0 and f"resuming from {run_dir / 'checkpoints' / 'step-00000020'} (step 20)" in err
    assert "train_loss" not in out and (run_dir / "model" / "model.safetensors").read_bytes() == weights
    # --force starts over: the same seeded run again, its history restarted rather than appended
    code, out, err = run(capsys, *args, "--force")
    assert code == 0 and "resuming" not in err and "step     20 | train_loss" in out
    assert history() == metrics
    assert (run_dir / "model" / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("command", [["list"], ["plugins"], ["show", "simplenet-small"], ["schema"], ["check"]])
def test_listing_commands_never_import_torch(root, command):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['zoo', *{command!r}]\n"
        "from zoo.cli import main\n"
        "import io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(sys.argv[1:]) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr


def test_import_zoo_does_not_import_torch(no_torch_python):
    no_torch_python("import zoo; zoo.default_config()")


def test_closed_pipe_is_not_a_crash(root):
    """`zoo schema | head -c 10`: the reader is gone before zoo writes (it needs ~0.2 s to start)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err, err


SEEN_BY_TRAIN = """
import gc, sys
sys.argv = ["zoo", "train", "--trainer", "t", "--out", "o"]  # as the `zoo` script starts
import zoo.cli
from zoo.__main__ import run

def seen(args):
    print(gc.isenabled(), gc.get_freeze_count())
    return 0

core = zoo.cli.CORE
zoo.cli.CORE = tuple((n, seen if n == "train" else r, *x) for n, r, *x in core)
run()
"""


def test_the_command_line_process_collects_during_the_command_but_skips_torchs_objects(root, monkeypatch, capsys):
    """`zoo train` imports torch with the collector paused, then freezes those objects: the
    command itself runs with the collector on. A program that calls `main` keeps its collector as
    it was."""
    res = subprocess.run([sys.executable, "-c", SEEN_BY_TRAIN], capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stderr
    enabled, frozen = res.stdout.split()
    assert enabled == "True" and int(frozen) > 100_000, res.stdout

    import gc

    import zoo.cli

    before = gc.get_freeze_count()
    seen: list[tuple[bool, int]] = []

    def train(args) -> int:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return 0

    core = [(name, train if name == "train" else run_, *rest) for name, run_, *rest in zoo.cli.CORE]
    monkeypatch.setattr(zoo.cli, "CORE", tuple(core))
    assert main(["train", "--trainer", "t", "--out", "o"]) == 0
    ((enabled, count),) = seen
    assert enabled and count <= before  # nothing more frozen (frozen objects may have been freed)
