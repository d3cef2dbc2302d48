"""Exit codes as documented in `zoo --help`: 2 bad input, 1 a run that failed, 130 Ctrl-C at any moment."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from zoo.cli import main

MODEL = json.dumps({"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 1, "n_heads": 2})
LONG = {"type": "causal-lm", "max_steps": 100000, "batch_size": 4, "context": 32, "checkpoint_every": 50}


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "2    bad input" in text and "1    the run failed" in text and "130  interrupted" in text


def test_version(capsys):
    import zoo

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"zoo {zoo.__version__}"


def test_bad_input_is_2_and_a_failed_run_is_1(tmp_path, capsys):
    assert main(["train", "--model", "nope", "--trainer", "lm", "--out", str(tmp_path / "a")]) == 2
    nan = {"type": "classifier", "max_steps": 5, "lr": 1e30, "grad_clip": None, "optimizer": {"name": "sgd"}}
    net = json.dumps({"type": "simplenet", "in_features": 4, "hidden": [8], "num_classes": 2})
    assert main(["train", "--model", net, "--trainer", json.dumps(nan), "--out", str(tmp_path / "b")]) == 1
    assert "non-finite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sig", "delay"),
    [(signal.SIGINT, d) for d in (0.15, 0.5, 1.0, 2.0, 3.5)] + [(signal.SIGTERM, d) for d in (0.3, 1.5, 3.0)],
)
def test_ctrl_c_at_any_moment_is_130_without_a_traceback(tmp_path, sig, delay):
    """SIGINT (SIGTERM: 143) while Python imports zoo and torch, loads plugins, tokenizes, or
    trains: one line, "interrupted" (or, once training runs, where it stopped and how to go on)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "zoo", "train", "--model", MODEL, "--trainer", json.dumps(LONG)]
    # as from a terminal: SIGINT not ignored, whatever this test runner inherited (a background job's is)
    terminal = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}
    proc = subprocess.Popen([*cmd, "--out", str(out)], stderr=subprocess.PIPE, text=True, cwd=tmp_path, **terminal)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if "init_import_site" in err or "Could not import runpy module" in err:  # Python's own start-up, loaded machine
        pytest.skip("the interrupt arrived while the interpreter itself started, before any zoo code ran")
    if proc.returncode == -sig and not err and delay < 0.5:  # likewise, before `import zoo` set its guard
        pytest.skip("the signal arrived while the interpreter itself started, before any zoo code ran")
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    stopped = ("zoo: stopped at step ", "zoo: stopped before the first step")  # once the engine holds the signal
    assert last == f"zoo: {word}" or last.startswith(stopped), err[-2000:]


def test_a_program_that_imports_zoo_keeps_its_own_ctrl_c(tmp_path):
    """Only zoo's command line holds Ctrl-C while the package imports; `python -m pkg` whose
    package imports zoo (and a plain script) keep Python's KeyboardInterrupt."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("import zoo\n")
    (tmp_path / "pkg" / "main.py").write_text("import signal\nprint(signal.getsignal(signal.SIGINT))\n")
    show = "import signal; print(signal.getsignal(signal.SIGINT))"
    plain = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True).stdout  # as inherited
    for args in (["-m", "pkg.main"], ["-c", f"import zoo; {show}"]):
        res = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0 and res.stdout == plain, res.stderr
