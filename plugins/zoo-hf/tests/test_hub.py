"""``hf:ORG/NAME[@REVISION]`` against a hub served on 127.0.0.1 by the test (`hubserver`), through
the real ``huggingface_hub`` client: download, cache reuse offline and with the hub gone, revision
pins, refused repos that download no weights, a download cut mid-file and resumed, a server error,
and the provenance a fine-tune records. Commands run as real processes (``zoo ...``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hubserver import Hub

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
REPO = "zoo-test/tiny-llama"


def repo_files(folder: Path, seed: int) -> dict[str, bytes]:
    """A tiny Llama with a BPE tokenizer and a chat template, as the hub would hold it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|end|>"]
    raw.train_from_iterator(
        ["hello there the zoo has models and more"] * 20, trainers.BpeTrainer(vocab_size=60, special_tokens=specials)
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tok.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    # what a real repo holds besides: zoo must never fetch these
    files["README.md"] = b"# tiny\n"
    files["pytorch_model.bin"] = b"\x80\x04not really a pickle" * 100
    files["onnx/model.onnx"] = b"\x08\x07" * 100
    return files


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> list[dict[str, bytes]]:
    return [repo_files(tmp_path_factory.mktemp(f"v{seed}"), seed) for seed in (1, 2)]


@pytest.fixture
def env(hub, tmp_path) -> dict[str, str]:
    """The environment of a zoo process that reaches the test hub (and only it)."""
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "5",
    }


def zoo_cmd(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd
    )


def fetched(hub: Hub) -> set[str]:
    """The files whose bytes the hub served (GET of /resolve/)."""
    return {
        path.split("/resolve/", 1)[1].split("/", 1)[1]
        for method, path, *_ in hub.requests
        if method == "GET" and "/resolve/" in path
    }


def greedy(env: dict[str, str], target: str, cwd: Path) -> list[int]:
    out = zoo_cmd(env, "generate", target, "--prompt", "hello the zoo", "--max-new-tokens", "6", "--json", cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]["ids"]


def test_pull_fetches_only_what_zoo_reads_then_works_from_the_cache(hub, env, versions, tmp_path):
    sha = hub.add_repo(REPO, versions[0])
    out = zoo_cmd(env, "pull", f"hf:{REPO}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sha in out.stdout and "model.safetensors" in out.stdout
    digest = hashlib.sha256(versions[0]["model.safetensors"]).hexdigest()
    assert digest in out.stdout  # each file's sha256 is printed
    assert fetched(hub) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not fetched(hub) & {"README.md", "pytorch_model.bin", "onnx/model.onnx"}

    ids = greedy(env, f"hf:{REPO}", tmp_path)
    listed = zoo_cmd(env, "list", "--cached", "--json", cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [(r["reference"], r["revision"]) for r in rows] == [(f"hf:{REPO}", sha)]

    hub.stop()  # no hub at all: the cache answers, offline or not
    assert greedy({**env, "HF_HUB_OFFLINE": "1"}, f"hf:{REPO}", tmp_path) == ids
    assert greedy(env, f"hf:{REPO}", tmp_path) == ids
    missing = zoo_cmd(env, "generate", "hf:zoo-test/not-pulled", "--prompt", "x", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "not in the cache" in missing.stderr and "zoo pull hf:zoo-test/not-pulled" in missing.stderr


def test_a_revision_pins_the_weights_and_fine_tunes_record_it(hub, env, versions, tmp_path):
    old = hub.add_repo(REPO, versions[0])
    new = hub.add_commit(REPO, versions[1])
    assert greedy(env, f"hf:{REPO}@{old}", tmp_path) != greedy(env, f"hf:{REPO}", tmp_path)
    local = tmp_path / "local-old"
    local.mkdir()
    for name, data in versions[0].items():
        if "/" not in name and not name.endswith(".bin"):
            (local / name).write_bytes(data)
    assert greedy(env, f"hf:{REPO}@{old}", tmp_path) == greedy(env, str(local), tmp_path)

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello there the zoo has models and more\n" * 50)
    run = tmp_path / "ft"
    trainer = {"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 16, "progress": False}
    out = zoo_cmd(env, "train", "--init-from", f"hf:{REPO}", "--trainer", json.dumps(trainer), "--data", str(corpus),
                  "--out", str(run), "--device", "cpu", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    parent = json.loads((run / "run.json").read_text())["init_from"]
    assert parent["path"] == f"hf:{REPO}@{new}" and parent["revision"] == new
    assert parent["files"]["model.safetensors"] == hashlib.sha256(versions[1]["model.safetensors"]).hexdigest()
    assert parent["files"]["config.json"] == hashlib.sha256(versions[1]["config.json"]).hexdigest()
    manifest = json.loads((run / "model" / "manifest.json").read_text())
    assert manifest["parent"]["revision"] == new


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"config.json": {"auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}}}, "auto_map"),
        ({"tokenizer_config.json": {"auto_map": {"AutoTokenizer": ["tok.Evil", None]}}}, "auto_map"),
        ({"config.json": {"model_type": "evil-arch"}}, "not an architecture transformers ships"),
        ({"model.safetensors": None}, "only pickled weights"),
    ],
)
def test_a_refused_repo_downloads_no_weights(hub, env, versions, tmp_path, change, why):
    files = dict(versions[0])
    for name, edit in change.items():
        if edit is None:
            del files[name]
        else:
            files[name] = json.dumps({**json.loads(files[name]), **edit}).encode()
    hub.add_repo(REPO, files)
    out = zoo_cmd(env, "generate", f"hf:{REPO}", "--prompt", "x", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert why in out.stderr
    decisive = {"config.json", "tokenizer_config.json", "generation_config.json"}
    assert fetched(hub) <= decisive  # the JSON that decides, and no weight or tokenizer


def test_a_download_cut_mid_file_resumes_and_a_server_error_is_one_message(hub, env, versions, tmp_path):
    sha = hub.add_repo(REPO, versions[0])
    size = len(versions[0]["model.safetensors"])
    hub.fail_file(REPO, "model.safetensors", after_bytes=size // 2, times=1)
    first = zoo_cmd(env, "pull", f"hf:{REPO}", cwd=tmp_path)
    if first.returncode != 0:  # the client may retry on its own; else the next pull resumes
        assert first.returncode == 2 and "Traceback" not in first.stderr and "again" in first.stderr
        second = zoo_cmd(env, "pull", f"hf:{REPO}", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
    ranges = [r for method, path, r, *_ in hub.requests if path.endswith("model.safetensors") and r]
    assert ranges, "the second transfer asked only for the rest of the file"
    blob = next((Path(env["HF_HOME"]) / "hub").glob(f"models--zoo-test--tiny-llama/snapshots/{sha}/model.safetensors"))
    assert blob.read_bytes() == versions[0]["model.safetensors"]

    hub.add_repo("zoo-test/broken", versions[0])
    hub.fail_file("zoo-test/broken", "model.safetensors", after_bytes=100, status=500, times=100)
    out = zoo_cmd(env, "pull", "hf:zoo-test/broken", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") <= 2 and "hf:zoo-test/broken" in out.stderr


def test_unknown_repos_revisions_and_bad_references_are_one_message(hub, env, versions, tmp_path):
    hub.add_repo(REPO, versions[0])
    for target, message in [
        ("hf:zoo-test/nope", "no such model repo"),
        (f"hf:{REPO}@v9", "no such revision"),
        ("hf:../../etc", "expected hf:ORG/NAME"),
    ]:
        out = zoo_cmd(env, "generate", target, "--prompt", "x", cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert message in out.stderr
