"""A Hugging Face folder whose vocabulary is not bytes and that lacks its tokenizer files is
refused wherever text goes in or out (generate, chat, eval, train): exit 2, naming the folder, the
missing files and how to add them; naming a tokenizer (--tokenizer PATH|byte) is the way past it."""

from __future__ import annotations

import json
import shutil

import pytest

import zoo
from zoo.cli import main

CHILD = {"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 8, "log_every": 1, "progress": False}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_llama):
    """(the tiny Llama with its 300-token tokenizer, the same folder without tokenizer files)."""
    root = tmp_path_factory.mktemp("tok")
    full = make_llama(root / "full")
    bare = root / "bare"
    shutil.copytree(full, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    return full, bare


def command(name, folder, corpus, tmp_path):
    run = ["--out", str(tmp_path / "run"), "--device", "cpu"]
    return {
        "generate": ["generate", str(folder), "--prompt", "quick", "--max-new-tokens", "3"],
        "chat": ["chat", str(folder)],
        "eval": ["eval", str(folder), "--data", str(corpus), "--max-bytes", "2000"],
        "train": ["train", "--init-from", str(folder), "--trainer", json.dumps(CHILD), "--data", str(corpus), *run],
    }[name]


@pytest.mark.parametrize("name", ["generate", "chat", "eval", "train"])
def test_a_folder_without_its_tokenizer_is_refused(folders, corpus, tmp_path, capsys, name):
    _, bare = folders
    assert main(command(name, bare, corpus, tmp_path)) == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "300-token vocabulary" in err
    assert "tokenizer.json" in err and "tokenizer_config.json" in err
    assert "save_pretrained" in err and "--tokenizer" in err
    assert "Traceback" not in err and "ByteTokenizer" not in err
    assert not (tmp_path / "run").exists()


def test_python_generate_is_refused_too(folders):
    _, bare = folders
    with pytest.raises(zoo.ZooError, match="no tokenizer"):
        zoo.generate(str(bare), None, ["quick"], max_new_tokens=2)


def test_naming_the_tokenizer_is_the_way_past(folders, corpus, tmp_path, capsys):
    full, bare = folders
    args = ["--prompt", "quick daft", "--max-new-tokens", "4", "--json"]
    assert main(["generate", str(full), *args]) == 0
    want = json.loads(capsys.readouterr().out)
    assert main(["generate", str(bare), *args, "--tokenizer", str(full)]) == 0
    assert json.loads(capsys.readouterr().out) == want
    assert main(["generate", str(bare), *args, "--tokenizer", "byte"]) == 0  # asked for: bytes it is
    assert main([*command("eval", bare, corpus, tmp_path), "--tokenizer", str(full), "--json"]) == 0
    assert main([*command("train", bare, corpus, tmp_path), "--tokenizer", str(full)]) == 0
    trained = zoo.tokenizer_of(zoo.load(tmp_path / "run" / "model"))  # saved with the model it trained
    assert trained.encode("quick daft") == zoo.load_tokenizer(full, {"type": "hf"}).encode("quick daft")


def test_a_tokenizer_flag_that_names_nothing_is_refused(folders, tmp_path, capsys):
    _, bare = folders
    assert main(["generate", str(bare), "--prompt", "x", "--tokenizer", str(tmp_path)]) == 2
    assert "--tokenizer" in capsys.readouterr().err
