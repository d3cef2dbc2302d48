"""Every file zoo reads, mutated the ways an attacker or a broken disk would, through real commands.

A real run folder (BPE tokenizer, checkpoints, metrics, the saved model), a real HF GPT-2 folder
and a LoRA adapter folder on the run's model are made once. Each hypothesis case copies one,
mutates one file (a JSON node replaced by a wrong type, null, a list for a table, nesting 10^5
deep, a 5,000-digit integer; or the whole file truncated, replaced by random bytes, emptied,
replaced by a symlink to /dev/zero, to a folder, to itself, or by a folder) and runs `zoo generate`
(on the run, and on the adapter folder), `zoo train --resume`, `zoo plot`, `zoo export` or `zoo
import` in-process under a time limit. Every outcome must be exit 0, or exit 2 with one message
naming the file (or its folder): never another exception, a Rust panic or a hang.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.cli import main

CASES: Counter[str] = Counter()
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000
TIME_LIMIT_S = 30

MODEL = {"type": "minigpt", "vocab_size": 320, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 64}
TRAINER = {
    "type": "causal-lm",
    "max_steps": 4,
    "batch_size": 4,
    "context": 16,
    "eval_every": 2,
    "eval_batches": 1,
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "progress": False,
    "tokenizer": {"type": "bpe", "vocab_size": 300},
}
RUN_FILES = [
    "run.json",
    "metrics.jsonl",
    "data/tokens.json",
    "data/tokens.bin",
    "data/tokenizer.json",
    "checkpoints/step-00000002/state.json",
    "checkpoints/step-00000002/model.safetensors",
    "checkpoints/step-00000002/optimizer.safetensors",
    "checkpoints/step-00000002/rng.safetensors",
    "model/spec.json",
    "model/manifest.json",
    "model/model.safetensors",
    "model/tokenizer.json",
    "model/tokenizer_config.json",
]
HF_FILES = ["config.json", "model.safetensors"]
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"]  # a LoRA adapter on the run's model
# which command reads which file
COMMANDS = {
    "generate": [f for f in RUN_FILES if f.startswith("model/")],
    "export": [f for f in RUN_FILES if f.startswith("model/") and "tokenizer" not in f],
    "plot": ["metrics.jsonl"],
    "resume": RUN_FILES,
    "import": HF_FILES,
    "adapter": ADAPTER_FILES,
}
SOURCE = {"import": "hf", "adapter": "adapter"}  # the folder each command reads (else the run)


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pristine")
    corpus = root / "corpus.txt"
    corpus.write_text("".join(f"{i}: sphinx of black quartz, judge my vow.\n" for i in range(300)))
    run = root / "run"
    args = ["train", "--model", json.dumps(MODEL), "--trainer", json.dumps(TRAINER), "--out", str(run)]
    assert main([*args, "--data", str(corpus), "--device", "cpu"]) == 0
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # resume has steps left to run
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = root / "hf"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=256, n_positions=32)).save_pretrained(hf)
    return {"run": run, "hf": hf, "corpus": corpus, "adapter": adapter_on(run / "model", root / "adapter")}


def adapter_on(base: Path, folder: Path) -> Path:
    """A LoRA adapter in peft's layout with non-zero updates, its base the run's model (absolute)."""
    import torch

    import zoo
    from zoo.adapters import write_adapter
    from zoo.trainers.lora import apply_lora
    from zoo.trainers.specs import LoraSpec

    model, spec = zoo.load(base), LoraSpec(rank=2)
    apply_lora(model, spec)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_()
    folder.mkdir()
    write_adapter(folder, model, spec, {"path": str(base.resolve()), "sha256": "0" * 64})
    return folder


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node of a JSON document, as a path of keys/indices."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            out += json_paths(v, (*prefix, i))
    return out


HOSTILE = [
    *("null", "[]", "{}", '"text"', "-1", "1e308", "true", "0"),
    *(DEEP, HUGE_INT, "[" + HUGE_INT + "]", '"' + "x" * 5000 + '"'),
]


def mutate_json_lines(text: str, draw: Any) -> str:
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = mutate_json(lines[i], draw)
    return "\n".join(lines) + "\n"


def mutate_json(text: str, draw: Any) -> str:
    doc = json.loads(text)
    path = draw(st.sampled_from(json_paths(doc)))
    marker = "__HOSTILE__"
    if not path:
        return draw(st.sampled_from(HOSTILE))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(doc).replace(f'"{marker}"', draw(st.sampled_from(HOSTILE)))


def mutate(target: Path, draw: Any) -> str:
    kind = draw(
        st.sampled_from(
            ["json", "json", "json", "truncate", "random", "empty", "zero", "dirlink", "loop", "folder", "missing"]
        )
    )
    data = target.read_bytes()
    if kind == "json" and target.suffix in (".json", ".jsonl"):
        change = mutate_json_lines if target.suffix == ".jsonl" else mutate_json
        target.write_text(change(data.decode(), draw))
    elif kind in ("json", "truncate"):
        target.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
        kind = "truncate"
    elif kind == "random":
        target.write_bytes(draw(st.binary(min_size=1, max_size=256)))
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind in ("zero", "dirlink", "loop", "folder", "missing"):
        target.unlink()
        if kind == "zero":
            target.symlink_to("/dev/zero")
        elif kind == "dirlink":
            target.symlink_to(target.parent)
        elif kind == "loop":
            target.symlink_to(target)
        elif kind == "folder":
            target.mkdir()
    return kind


def run_command(command: str, work: Path, corpus: Path) -> tuple[int, str]:
    argv = {
        "generate": ["generate", str(work / "run"), "--prompt", "sphinx", "--max-new-tokens", "4"],
        "export": ["export", str(work / "run"), "--out", str(work / "exported")],
        "plot": ["plot", str(work / "run"), "--out", str(work / "loss.png")],
        "resume": [
            "train",
            "--model",
            json.dumps(MODEL),
            "--trainer",
            json.dumps(TRAINER),
            "--out",
            str(work / "run"),
            "--data",
            str(corpus),
            "--device",
            "cpu",
            "--resume",
        ],
        "import": ["import", str(work / "hf"), "--out", str(work / "imported")],
        "adapter": ["generate", str(work / "adapter"), "--prompt", "sphinx", "--max-new-tokens", "4"],
    }[command]

    def hang(signum: int, frame: Any) -> None:
        raise Hang(f"{command} ran past {TIME_LIMIT_S} s")

    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(TIME_LIMIT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


@pytest.mark.parametrize("command", list(COMMANDS))
@settings(max_examples=examples(80, 150), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_mutated_files_never_crash_a_command(command, data, pristine, tmp_path_factory):
    work = tmp_path_factory.mktemp(command)
    source = SOURCE.get(command, "run")
    shutil.copytree(pristine[source], work / source, symlinks=True)
    rel = data.draw(st.sampled_from(COMMANDS[command]), label="file")
    target = work / source / rel
    kind = mutate(target, data.draw)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code, err = run_command(command, work, pristine["corpus"])
    finally:
        os.chdir(cwd)
    CASES[f"{command}/{kind}"] += 1
    assert code in (0, 2), f"exit {code} for {rel} ({kind}): {err[-1500:]}"
    if code == 2:
        assert err.count("zoo: error: ") == 1, err[-1500:]
        assert "Traceback" not in err
        assert len(err) < 4000, "an error message quotes too much of a bad value"
        named = {Path(rel).name, Path(rel).parent.name or source, source}
        assert any(n in err for n in named), f"{rel} ({kind}) not named: {err[-800:]}"


def test_report_hostile_case_counts():
    """Printed in the test log (pytest -s) and checked: every command ran its cases."""
    total = sum(CASES.values())
    print(f"\nhostile-file cases: {total}: " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))
    if CASES:
        assert {k.split("/")[0] for k in CASES} == set(COMMANDS)
