"""`zoo eval`: causal LMs (loss, perplexity, bits per byte with each model's tokenizer) and
classifiers (loss, accuracy) side by side, as a table, JSON and a bar chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.cli import main
from zoo.lm.tokenizers import BPETokenizerSpec, build_tokenizer
from zoo.tags import attach

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, naïvely.\n" for i in range(60))
LM = {"type": "minigpt", "vocab_size": 300, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 32}
NET = {"type": "simplenet", "in_features": 6, "hidden": [16], "num_classes": 3}


@pytest.fixture
def files(tmp_path: Path, config) -> dict[str, Path]:
    torch.manual_seed(0)
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    byte_lm = zoo.build_model(LM, config=config)
    # bytes in a 300-token vocabulary: the tokenizer is recorded (without one it would be refused)
    zoo.save(byte_lm, tmp_path / "byte", config=config, tokenizer=zoo.ByteTokenizer())
    bpe = build_tokenizer(BPETokenizerSpec(vocab_size=300), iter([TEXT]))
    spec = zoo.model_spec(LM, config=config)
    bpe_lm = attach(spec.build(), spec, tokenizer=bpe)
    zoo.save(bpe_lm, tmp_path / "bpe", config=config)
    net = zoo.build_model(NET, config=config)
    zoo.save(net, tmp_path / "net", config=config)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "table.npz", x=rng.normal(size=(50, 6)).astype("float32"), y=rng.integers(0, 3, 50))
    return {"text": tmp_path / "text.txt", "byte": tmp_path / "byte", "bpe": tmp_path / "bpe", "net": tmp_path / "net"}


def reference_nll(model, ids: list[int], length: int) -> tuple[float, int]:
    """The summed loss of every token after the first, window by window, one forward each."""
    nll, count = 0.0, 0
    for s in range(0, len(ids) - 1, length):
        chunk = torch.tensor(ids[s : s + length + 1])[None]
        logits, _ = model(chunk[:, :-1])
        nll += float(F.cross_entropy(logits[0].float(), chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    return nll, count


def test_each_model_scored_with_its_own_tokenizer_and_bits_per_byte(files, config):
    scores = zoo.evaluate(
        [files["byte"], files["bpe"]], files["text"], config=config, runtime=zoo.Runtime(device="cpu")
    )
    n_bytes = len(TEXT.encode("utf-8"))
    for score, name in zip(scores, ("byte", "bpe"), strict=True):
        model = zoo.load(files[name], config=config).eval()
        ids = zoo.tokenizer_of(model).encode(TEXT) if name == "bpe" else list(TEXT.encode("utf-8"))
        with torch.no_grad():
            nll, count = reference_nll(model, ids, 32)
        m = score.metrics
        assert m["tokens"] == count and m["bytes"] == n_bytes
        assert m["loss"] == pytest.approx(nll / count, rel=1e-5)
        assert m["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
        assert m["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    byte, bpe = (s.metrics for s in scores)
    assert bpe["tokens"] < byte["tokens"] / 2  # BPE cuts the same text into fewer tokens


def test_classifier_accuracy_and_loss_over_every_example(files, config):
    (score,) = zoo.evaluate([files["net"]], files["net"].parent / "table.npz", config=config)
    model = zoo.load(files["net"], config=config).eval()
    with np.load(files["net"].parent / "table.npz") as table:
        x, y = torch.from_numpy(table["x"]), torch.from_numpy(table["y"])
    with torch.no_grad():
        logits = model(x)
    assert score.metrics["examples"] == 50
    assert score.metrics["accuracy"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    assert score.metrics["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)


def test_cli_table_json_and_bar_chart(files, tmp_path, capsys):
    chart = tmp_path / "chart.png"
    args = ["eval", str(files["byte"]), str(files["bpe"]), "--data", str(files["text"]), "--device", "cpu"]
    assert main([*args, "--plot", str(chart)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()[:3]
    assert header.split()[:3] == ["model", "type", "params"] and "bits/byte" in header and "accuracy" not in header
    assert rows[0].startswith(str(files["byte"])) and rows[1].startswith(str(files["bpe"]))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    assert main([*args, "--json", "--max-bytes", "1000"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [str(files["byte"]), str(files["bpe"])]
    assert rows[0]["metrics"]["bytes"] == 1000 and rows[0]["protocol"] == "causal-lm"


def test_json_lines_documents_are_scored_as_one_text(files, tmp_path, config):
    docs = TEXT.splitlines()
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (score,) = zoo.evaluate([files["byte"]], tmp_path / "docs.jsonl", config=config)
    assert score.metrics["bytes"] == len("".join(d + "\n\n" for d in docs).encode())
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(zoo.DataError, match=r"chat\.jsonl:1: zoo eval scores text, not conversations"):
        zoo.evaluate([files["byte"]], tmp_path / "chat.jsonl", config=config)


def test_bad_input_is_one_message(files, tmp_path, capsys):
    assert main(["eval", str(files["net"]), "--data", str(files["text"]), "--device", "cpu"]) == 2
    assert "no classifier data source reads .txt" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere"), "--data", str(files["text"])]) == 2
    assert "no such artifact" in capsys.readouterr().err
    assert main(["eval", str(files["byte"]), "--data", str(files["text"]), "--context", "0"]) == 2
    assert "zoo: error: --context 0: must be at least 1" in capsys.readouterr().err


def test_a_model_that_cannot_read_the_data_is_skipped_and_the_rest_compared(files, capsys):
    """A classifier beside causal LMs on a text file: the LMs are scored, the classifier is
    reported as skipped with the reason (it used to abort the whole comparison)."""
    args = ["eval", str(files["net"]), str(files["byte"]), "--data", str(files["text"]), "--device", "cpu"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(str(files["byte"])) and len(lines) == 3
    assert (
        lines[2].startswith(f"skipped {files['net']} (simplenet): ")
        and "no classifier data source reads .txt" in lines[2]
    )
    assert main([*args, "--json"]) == 0
    net, byte = json.loads(capsys.readouterr().out)
    assert "no classifier data source reads .txt" in net["skipped"] and net["metrics"] == {}
    assert byte["skipped"] is None and byte["metrics"]["bits_per_byte"] > 0


def test_parameters_read_at_a_glance(files, capsys):
    from zoo.commands.eval import count

    assert [count(n) for n in (512, 12_345, 842_496, 10_795_008, 1_240_000_000)] == [
        "512", "12.3K", "842K", "10.8M", "1.24B"
    ]  # fmt: skip
    assert main(["eval", str(files["net"]), "--data", str(files["net"].parent / "table.npz")]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[2] == count(6 * 16 + 16 + 16 * 3 + 3) == "163"  # not "0.00M"


def test_a_context_past_the_models_window_is_capped_at_it(files, config):
    """`--context` longer than a model's max_seq_len scores in windows of max_seq_len (the same loss
    as the default), never a forward pass past the model's positions."""
    runtime = zoo.Runtime(device="cpu")
    (capped,) = zoo.evaluate([files["byte"]], files["text"], config=config, runtime=runtime, context=10**6)
    (default,) = zoo.evaluate([files["byte"]], files["text"], config=config, runtime=runtime)
    (shorter,) = zoo.evaluate([files["byte"]], files["text"], config=config, runtime=runtime, context=8)
    assert capped.metrics == default.metrics and shorter.metrics["loss"] != default.metrics["loss"]
