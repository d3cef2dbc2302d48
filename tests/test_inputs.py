"""Issue 27: every bad input named there, and its siblings by class (names and paths the OS
refuses, numbers past a library's integer, depth a user controls, what would be silently ignored),
is exit 2 with one `zoo: error:` line naming what and where: no traceback, and no folder made."""

from __future__ import annotations

import json
import os

import pytest

from zoo.cli import main

HUGE = str(10**30)
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working directory with a little text, a run's metrics, a file, a FIFO and registry files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 60)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 2.0}\n')
    (tmp_path / "afile").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "cycle.toml").write_text('[models.a]\nbase = "b"\n[models.b]\nbase = "a"\n')
    (tmp_path / "chain.toml").write_text(
        '[models.m0]\ntype = "minigpt"\n' + "".join(f'[models.m{i}]\nbase = "m{i - 1}"\n' for i in range(300, 0, -1))
    )
    (tmp_path / "gone.toml").write_text('[models.gone]\ntype = "no-such-type"\n')
    messages = {"messages": [{"role": "user", "content": json.loads("[" * 40 + "]" * 40)}]}
    (tmp_path / "deep.jsonl").write_text(json.dumps(messages).replace("[]", DEEP) + "\n")
    return tmp_path


def trainer(**fields) -> str:
    return json.dumps({"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 16, **fields})


TRAIN = ["train", "--model", "minigpt-tiny", "--data", "c.txt", "--out", "new", "--device", "cpu"]

CASES = {
    # named in the issue
    "a prompt byte that is not UTF-8": (
        ["generate", "minigpt-tiny", "--prompt", "a\udcffb"],
        "--prompt: not UTF-8 text (the byte 0xff at character 1)",
    ),
    "plot to an unknown format": (["plot", "run", "--out", "x.foo"], "--out x.foo: cannot write a .foo picture"),
    "plot into a missing folder": (["plot", "run", "--out", "nodir/x.png"], "nodir is not a folder"),
    "eval --plot to an unknown format": (
        ["eval", "minigpt-tiny", "--data", "c.txt", "--plot", "e.foo"],
        "--plot e.foo: cannot write a .foo picture",
    ),
    "eval --plot through a file": (
        ["eval", "minigpt-tiny", "--data", "c.txt", "--plot", "afile/e.png"],
        "afile is not a folder (a file)",
    ),
    "early stopping on a metric never reported": (
        [
            *TRAIN[:3],
            "--trainer",
            trainer(callbacks=[{"type": "early-stopping", "metric": "val_accuracy"}]),
            *TRAIN[3:],
        ],
        "early-stopping watches 'val_accuracy', which a causal-lm trainer's evaluation never reports",
    ),
    "--system without --chat": (["generate", "minigpt-tiny", "--prompt", "x", "--system", "s"], "add --chat"),
    "--set samplers.X with another --sampler": (
        ["generate", "minigpt-tiny", "--prompt", "x", "--set", "samplers.creative.p=0.5", "--sampler", "greedy"],
        "--set changes the sampler 'creative', but this command samples with 'greedy'",
    ),
    "zoo list of an unknown kind": (["list", "model"], "unknown kind or name 'model'; did you mean 'models'"),
    "a --set error": (["show", "minigpt-tiny", "--set", "models.minigpt-tiny.n_heads=x"], "--set models.minigpt"),
    "a base cycle": (["list", "--registry", "cycle.toml"], "derives from itself: a -> b -> a"),
    "show of an unavailable preset": (
        ["show", "gone", "--registry", "gone.toml"],
        "model 'gone' is unavailable: type 'no-such-type' is not available",
    ),
    "generate of a missing folder": (
        ["generate", "missing_dir", "--prompt", "x"],
        "missing_dir: no such folder, and not a model preset or type",
    ),
    "eval --data /dev/zero": (["eval", "minigpt-tiny", "--data", "/dev/zero"], "/dev/zero: not a regular file"),
    # paths the OS refuses
    "--out with a name past 255 bytes": ([*TRAIN[:-3], "a" * 300, "--trainer", trainer()], "longer than 255 bytes"),
    "--out with a NUL byte": ([*TRAIN[:-3], "a\0b", "--trainer", trainer()], "the path contains a NUL byte"),
    "--data through a file": (
        [*TRAIN[:3], "--trainer", trainer(), "--data", "afile/x", "--out", "new"],
        "afile/x: cannot be read (Not a directory)",
    ),
    "--data a FIFO": (
        [*TRAIN[:3], "--trainer", trainer(), "--data", "fifo", "--out", "new"],
        "fifo: not a regular file",
    ),
    "--data with a NUL byte": (
        [*TRAIN[:3], "--trainer", trainer(), "--data", "c\0.txt", "--out", "new"],
        "the path contains a NUL byte",
    ),
    "plot --out past 255 bytes": (["plot", "run", "--out", "x" * 300 + ".png"], "longer than 255 bytes"),
    # numbers past a library's integer
    "--seed 2**70": (["generate", "minigpt-tiny", "--prompt", "x", "--seed", str(2**70)], "must be between 0 and"),
    "--set runtime.seed=2**70": (
        ["generate", "minigpt-tiny", "--prompt", "x", "--set", f"runtime.seed={2**70}"],
        f"--set runtime.seed={2**70}: Input should be less than or equal to",
    ),
    "--max-new-tokens 10**30": (
        ["generate", "minigpt-tiny", "--prompt", "x", "--max-new-tokens", HUGE],
        "exceeds the model's context",
    ),
    "a huge model width": (
        [*TRAIN[:2], f'{{"type": "minigpt", "d_model": {HUGE}}}', "--trainer", trainer(), *TRAIN[5:]],
        "minigpt.d_model: Input should be less than or equal to 1048576",
    ),
    "a huge layer count": (
        [*TRAIN[:2], f'{{"type": "minigpt", "n_layers": {HUGE}}}', "--trainer", trainer(), *TRAIN[5:]],
        "minigpt.n_layers: Input should be less than or equal to 4096",
    ),
    "a huge batch": (
        [*TRAIN[:3], "--trainer", trainer(batch_size=10**30), *TRAIN[3:]],
        "causal-lm.batch_size: Input should be less than or equal to",
    ),
    "a huge hidden width": (
        ["train", "--model", f'{{"type": "simplenet", "hidden": [{HUGE}]}}', "--trainer", "classifier-quick"],
        "hidden widths must be positive and at most",
    ),
    # depth a user controls
    "a base chain 300 deep": (["list", "--registry", "chain.toml"], "derives through more than 64 bases"),
    "an inline spec 5000 deep": (
        [*TRAIN[:2], '{"type": "minigpt", "x": ' + DEEP + "}", "--trainer", trainer(), *TRAIN[5:]],
        "nested too deeply",
    ),
    "a --set value 5000 deep": (["show", "minigpt-tiny", "--set", f"models.minigpt-tiny.n_heads={DEEP}"], "deeply"),
    "chat messages 5000 deep": (["generate", "minigpt-tiny", "--prompt-file", "deep.jsonl"], "deep.jsonl:1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exit_2_with_one_message_and_no_folder(case, workdir, capsys):
    argv, message = CASES[case]
    if argv[0] == "train" and "--out" not in argv:
        argv = [*argv, "--out", "new"]
    before = sorted(p.name for p in workdir.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("zoo: error:") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert sorted(p.name for p in workdir.iterdir()) == before


def test_a_registry_that_is_a_folder_is_reported_not_skipped(workdir, capsys):
    (workdir / "xdg" / "zoo" / "registry.toml").mkdir(parents=True)
    assert main(["list", "models"]) == 2
    assert "xdg/zoo/registry.toml: not a regular file" in capsys.readouterr().err


def test_set_on_one_sampler_alone_samples_with_it(workdir, capsys):
    """`--set samplers.greedy...` without `--sampler`: it is the sampler used (said on stderr)."""
    args = ["generate", "minigpt-tiny", "--prompt", "x", "--max-new-tokens", "2", "--json"]
    assert main([*args, "--set", "samplers.creative.temperature=0.5"]) == 0
    assert "sampling with 'creative', the sampler --set changes" in capsys.readouterr().err
