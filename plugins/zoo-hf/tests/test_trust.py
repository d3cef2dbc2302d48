"""Nothing read from a model folder runs code, unpickles or reaches the network.

Each case is run as a user would: a real `zoo` process with stdin open and answering "y" to any
prompt, sockets guarded (any connect attempt is recorded and refused), and a planted module or
pickle payload that would write a marker file if it ever ran.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2, "vocab_size": 256, "n_positions": 32}

# Run the CLI with every socket connect recorded in a file and refused.
GUARDED = """
import socket, sys
def connect(self, *a, **k):
    open(sys.argv[1], "a").write(repr(a) + "\\n")
    raise OSError("network disabled by the test")
socket.socket.connect = connect
socket.create_connection = lambda *a, **k: connect(None, *a)
sys.argv = ["zoo", *sys.argv[2:]]
from zoo.__main__ import run
run()
"""


class Payload:
    """Unpickling this writes the marker: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "pickle ran"))


def zoo_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    connects = tmp_path / "connects.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}  # no HF_HUB_OFFLINE
    res = subprocess.run(
        [sys.executable, "-c", GUARDED, str(connects), *args],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert not connects.exists(), f"zoo tried to reach the network: {connects.read_text()}"
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    return res


def gpt2_folder(folder: Path) -> Path:
    GPT2LMHeadModel(GPT2Config(**TINY)).save_pretrained(folder, safe_serialization=True)
    return folder


def plant_remote_code(folder: Path, marker: Path, hub_style: bool) -> None:
    """auto_map pointing at a module in the folder (or on the hub) that writes the marker."""
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n"
        "from transformers import GPT2LMHeadModel as Evil\n"
    )
    config = json.loads((folder / "config.json").read_text())
    target = "someone/repo--evil.Evil" if hub_style else "evil.Evil"
    config["auto_map"] = {"AutoConfig": target, "AutoModelForCausalLM": target}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("hub_style", [False, True], ids=["local-module", "hub-module"])
def test_auto_map_in_a_path_folder_never_runs_and_never_connects(tmp_path, hub_style):
    folder, marker = gpt2_folder(tmp_path / "model"), tmp_path / "MARKER"
    plant_remote_code(folder, marker, hub_style)
    model = json.dumps({"type": "hf-causal-lm", "path": str(folder)})
    trainer = json.dumps({"type": "causal-lm", "max_steps": 1, "batch_size": 2, "context": 8, "progress": False})
    res = zoo_cli(tmp_path, "train", "--model", model, "--trainer", trainer, "--out", str(tmp_path / "run"))
    assert res.returncode == 2, res.stderr
    assert "auto_map asks to run Python code shipped in the folder" in res.stderr
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_auto_map_in_an_artifact_spec_is_refused(tmp_path):
    """An artifact whose spec.json carries an inline config with auto_map: refused before transformers."""
    import zoo

    art = tmp_path / "art"
    zoo.save(zoo.build_model({"type": "hf-causal-lm", "config": {"model_type": "gpt2", **TINY}}), art)
    spec = json.loads((art / "spec.json").read_text())
    spec["config"]["auto_map"] = {"AutoModelForCausalLM": "someone/repo--evil.Evil"}
    (art / "spec.json").write_text(json.dumps(spec))
    res = zoo_cli(tmp_path, "generate", str(art), "--prompt", "hi", "--max-new-tokens", "2")
    assert res.returncode == 2
    assert "auto_map" in res.stderr


def test_auto_map_in_a_tokenizer_config_is_refused(tmp_path):
    folder, marker = gpt2_folder(tmp_path / "model"), tmp_path / "MARKER"
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    res = zoo_cli(tmp_path, "import", str(folder), "--out", str(tmp_path / "imported"))
    assert res.returncode == 2
    assert "tokenizer_config.json: auto_map" in res.stderr
    assert not marker.exists()


@pytest.mark.parametrize("command", ["train", "import"])
def test_pickle_only_folders_are_refused_and_the_payload_never_runs(tmp_path, command):
    folder, marker = gpt2_folder(tmp_path / "model"), tmp_path / "MARKER"
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    if command == "train":
        model = json.dumps({"type": "hf-causal-lm", "path": str(folder)})
        trainer = json.dumps({"type": "causal-lm", "max_steps": 1, "batch_size": 2, "context": 8})
        res = zoo_cli(tmp_path, "train", "--model", model, "--trainer", trainer, "--out", str(tmp_path / "run"))
    else:
        res = zoo_cli(tmp_path, "import", str(folder), "--out", str(tmp_path / "imported"))
    assert res.returncode == 2
    assert "pytorch_model.bin" in res.stderr and "never loads pickle" in res.stderr
    assert "save_pretrained(folder, safe_serialization=True)" in res.stderr  # how to convert it
    assert not marker.exists()


def test_import_never_replaces_its_own_source(tmp_path):
    folder = gpt2_folder(tmp_path / "model")
    before = sorted(p.name for p in folder.iterdir())
    res = zoo_cli(tmp_path, "import", str(folder), "--out", str(folder), "--force")
    assert res.returncode == 2 and "holds the source folder" in res.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_clean_folder_still_imports_offline(tmp_path):
    folder = gpt2_folder(tmp_path / "model")
    res = zoo_cli(tmp_path, "import", str(folder), "--out", str(tmp_path / "imported"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "imported" / "model.safetensors").is_file()


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_custom_pipelines_are_refused_like_auto_map(tmp_path, file, capsys):
    """``custom_pipelines`` names a pipeline class in a module of the folder (or a hub repo): code
    too. Refused in either file, exit 2, the planted module never runs."""
    from zoo.cli import main

    folder, marker = gpt2_folder(tmp_path / "model"), tmp_path / "MARKER"
    path = folder / file
    data = json.loads(path.read_text()) if path.exists() else {}
    data["custom_pipelines"] = {"text-generation": {"impl": "evil.Pipeline", "pt": ["AutoModelForCausalLM"]}}
    path.write_text(json.dumps(data))
    assert main(["generate", str(folder), "--prompt", "x", "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{file}: custom_pipelines asks to run Python code" in err or f"{file}: names code to run" in err, err
    assert not marker.exists()
