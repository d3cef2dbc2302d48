"""Day-one edges (issue 27): progress lines off a terminal, Lightning's precision names,
--max-steps/--lr/--batch-size with a warmup clipped to the run, the train summary, the synthetic-data
note."""

from __future__ import annotations

import json
import re

import pytest

import zoo
from zoo.cli import main
from zoo.commands.train import summary
from zoo.specs import RuntimeSpec


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_one_progress_line_per_log_interval_when_not_on_a_terminal(tmp_path, capsys):
    """Under capsys stdout and stderr are no terminal: no tqdm bar, one line per log_every steps."""
    out_dir = tmp_path / "r"
    code, out, err = run(
        capsys, "train", "--model", "simplenet-small", "--trainer", "classifier-quick", "--out", str(out_dir),
        "--max-steps", "30", "--set", "trainers.classifier-quick.eval_every=0",
    )  # fmt: skip
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if re.match(r"step \d+/30 \|", ln)]
    assert [ln.split(" | ")[0] for ln in lines] == ["step 10/30", "step 20/30", "step 30/30"], out
    for line in lines:
        assert re.search(r"\| loss \d+\.\d{4} \| lr \d\.\d\de-\d\d \| gnorm .* \| examples/s [\d,]+", line), line
    assert [bool(re.search(r"\| eta \d+s$", ln)) for ln in lines] == [True, True, False]  # none once done
    assert "\r" not in out + err  # no bar redrawn into the log
    # the note on synthetic data, and a summary without an empty field
    assert "note: no --data: training on synthetic data" in err
    assert re.search(r"^done: 30 steps; train_loss \S+, val_loss .*; model saved to .*r/model$", out, re.M), out


def test_progress_false_prints_no_lines(tmp_path, capsys):
    code, out, err = run(
        capsys, "train", "--model", "simplenet-small", "--trainer", "classifier-quick", "--out", str(tmp_path / "r"),
        "--max-steps", "10", "--set", "trainers.classifier-quick.progress=false",
    )  # fmt: skip
    assert code == 0, err
    assert not re.search(r"^step \d+/10", out, re.M)


@pytest.mark.parametrize(
    ("given", "zoo_name"),
    [
        ("bf16", "bf16-mixed"),
        ("bf16-mixed", "bf16-mixed"),
        ("16-mixed", "fp16-mixed"),
        ("16", "fp16-mixed"),
        ("32", "fp32"),
        (32, "fp32"),
        ("32-true", "fp32"),
        ("fp32", "fp32"),
        ("auto", "auto"),
    ],
)
def test_lightning_precision_names_are_aliases(given, zoo_name):
    assert RuntimeSpec(precision=given).precision == zoo_name


@pytest.mark.parametrize(("given", "hint"), [("bf16-true", "bf16-mixed"), ("16-true", "fp16-mixed"), ("64", "fp32")])
def test_precisions_zoo_lacks_are_refused_naming_what_to_use(capsys, given, hint):
    code, _, err = run(capsys, "show", "runtime", "--set", f"runtime.precision={json.dumps(given)}")
    assert code == 2 and "runtime.precision" in err and f"{given!r} is not supported" in err and hint in err, err


def test_the_aliases_are_documented_in_show_and_the_schema(capsys):
    code, out, _ = run(capsys, "show", "runtime")
    assert code == 0 and "bf16 = bf16-mixed" in out and "32 / 32-true = fp32" in out
    code, out, _ = run(capsys, "schema")
    precision = json.loads(out)["$defs"]["RuntimeSpec"]["properties"]["precision"]
    assert {"bf16", "16-mixed", "32"} <= set(precision["enum"]) and "bf16 = bf16-mixed" in precision["description"]


def test_precision_flag_alias_reaches_the_run(tmp_path, capsys):
    code, _, err = run(
        capsys, "train", "--model", "simplenet-small", "--trainer", "classifier-quick", "--out", str(tmp_path / "r"),
        "--max-steps", "10", "--lr", "0.01", "--batch-size", "16", "--precision", "bf16", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["runtime"]["precision"] == "bf16-mixed"
    trainer = info["trainer"]
    assert (trainer["max_steps"], trainer["lr"], trainer["batch_size"]) == (10, 0.01, 16)
    # classifier-quick warms up over 20 steps: clipped to this 10-step run, with a note
    assert "note: schedule 'cosine': warmup_steps 20 does not fit a run of 10 steps; warming up over 9" in err
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs == [pytest.approx(0.01)]  # step 10: the warmup (9 steps) is over, the peak reached


def test_trainer_flags_are_validated_and_named(tmp_path, capsys):
    base = ["train", "--model", "simplenet-small", "--trainer", "classifier-quick", "--out", str(tmp_path / "r")]
    code, _, err = run(capsys, *base, "--max-steps", "0")
    assert code == 2 and "--max-steps: Input should be greater than 0" in err
    code, _, err = run(capsys, *base, "--lr", "-1")
    assert code == 2 and "--lr:" in err
    assert not (tmp_path / "r").exists()


def test_set_max_steps_alone_runs_a_preset_with_a_longer_warmup(tmp_path):
    """`--set trainers.lm.max_steps=10` failed on lm's 50-step warmup; now the warmup is clipped."""
    cfg = zoo.load_config(overrides=["trainers.lm.max_steps=10"])
    assert cfg.spec("trainers", "lm").max_steps == 10


def test_the_summary_leaves_out_what_a_run_lacks():
    assert summary(60, {}, "r/model") == "done: 60 steps; model saved to r/model"
    assert summary(60, {"val_loss": 1.5}, None) == "done: 60 steps; val_loss 1.5000"
