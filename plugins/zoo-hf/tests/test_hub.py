"""``hf:ORG/NAME[@REVISION]`` against a hub served on 127.0.0.1 by the test (`hubserver`), through
the real ``huggingface_hub`` client: download, cache reuse offline and with the hub gone, revision
pins, refused repos that download no weights, a download cut mid-file and resumed, a server error,
and the provenance a fine-tune records. Commands run as real processes (``zoo ...``)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import warm
from hubserver import Hub
from zoo_hf.hub import quiet_unless_terminal, resolve

import zoo
from zoo.cli import main

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


def as_local_folder(files: dict[str, bytes], folder: Path) -> Path:
    """The repo's model as a local folder (what a user would have without the hub)."""
    folder.mkdir()
    for name, data in files.items():
        if "/" not in name and not name.endswith(".bin"):
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture(autouse=True)
def fresh_resolutions():
    """Each test starts with no reference resolved in this process (`resolve` remembers them)."""
    resolve.cache_clear()
    yield
    resolve.cache_clear()


@pytest.fixture
def env(hub) -> dict[str, str]:
    """The environment of a zoo process that reaches the test hub (the `hub` fixture set it)."""
    return {**os.environ, "HF_HUB_OFFLINE": "0"}


def zoo_process(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m zoo ARGS` in a process of its own (started warm: tests/warm.py)."""
    return warm.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def run(capsys, *args: str) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def fetched(hub: Hub) -> set[str]:
    """The repo files whose bytes the hub served (GET on /resolve or its CDN)."""
    return {r.path.rsplit("/", 1)[-1] if "/_cdn/" in r.path else r.path.split("/", 5)[-1] for r in hub.requested("*")}


def greedy_ids(capsys, target: str) -> list[int]:
    code, out, err = run(capsys, "generate", target, "--prompt", "hello the zoo", "--max-new-tokens", "6", "--json")
    assert code == 0, err
    return json.loads(out)["ids"]


def test_pull_then_generate_in_real_processes_and_from_the_cache_with_the_hub_gone(
    hub, env, versions, tmp_path, capsys
):
    sha = hub.add_repo(REPO, versions[0])
    out = zoo_process(env, "pull", f"hf:{REPO}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sha in out.stdout and hashlib.sha256(versions[0]["model.safetensors"]).hexdigest() in out.stdout
    assert fetched(hub) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not fetched(hub) & {"README.md", "pytorch_model.bin", "model.onnx"}  # only what zoo reads

    code, listed, _ = run(capsys, "list", "--cached", "--json")
    assert [(r["reference"], r["revision"]) for r in json.loads(listed)] == [(f"hf:{REPO}", sha)]
    online = greedy_ids(capsys, f"hf:{REPO}")
    served = len(hub.requests)
    hub.stop()  # no hub at all: the cache answers, offline or not
    args = ("generate", f"hf:{REPO}", "--prompt", "hello the zoo", "--max-new-tokens", "6", "--json")
    for gone in ({**env, "HF_HUB_OFFLINE": "1"}, env):
        again = zoo_process(gone, *args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["ids"] == online
    assert len(hub.requests) == served
    code, _, err = run(capsys, "generate", "hf:zoo-test/not-pulled", "--prompt", "x")
    assert code == 2 and "not in the cache" in err and "zoo pull hf:zoo-test/not-pulled" in err, err


def test_a_revision_pins_the_weights_and_a_fine_tune_records_it(hub, versions, tmp_path, capsys, monkeypatch):
    old = hub.add_repo(REPO, versions[0])
    new = hub.add_commit(REPO, versions[1])
    local = as_local_folder(versions[0], tmp_path / "local-old")
    pinned = greedy_ids(capsys, f"hf:{REPO}@{old}")
    assert pinned == greedy_ids(capsys, str(local))
    assert pinned != greedy_ids(capsys, f"hf:{REPO}")  # main is the newer commit

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello there the zoo has models and more\n" * 50)
    monkeypatch.chdir(tmp_path)
    trainer = json.dumps({"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 16, "progress": False})
    code, _, err = run(capsys, "train", "--init-from", f"hf:{REPO}", "--trainer", trainer, "--data", str(corpus),
                       "--out", "ft", "--device", "cpu")  # fmt: skip
    assert code == 0, err
    parent = json.loads((tmp_path / "ft" / "run.json").read_text())["init_from"]
    assert parent["path"] == f"hf:{REPO}@{new}" and parent["revision"] == new
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert parent["files"][name] == hashlib.sha256(versions[1][name]).hexdigest()
    assert json.loads((tmp_path / "ft" / "model" / "manifest.json").read_text())["parent"] == parent
    before = len(hub.requests)
    code, _, err = run(capsys, "train", "--resume", "--trainer", trainer, "--data", str(corpus), "--out", "ft",
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert len(hub.requests) == before  # the recorded commit is in the cache: a resume asks the hub nothing


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"config.json": {"auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}}}, "auto_map"),
        ({"tokenizer_config.json": {"auto_map": {"AutoTokenizer": ["tok.Evil", None]}}}, "auto_map"),
        ({"config.json": {"model_type": "evil-arch"}}, "not an architecture transformers ships"),
        ({"model.safetensors": None}, "only pickled weights"),
    ],
)
def test_a_refused_repo_downloads_no_weights(hub, versions, capsys, change, why):
    files = dict(versions[0])
    for name, edit in change.items():
        if edit is None:
            del files[name]
        else:
            files[name] = json.dumps({**json.loads(files[name]), **edit}).encode()
    hub.add_repo(REPO, files)
    code, _, err = run(capsys, "generate", f"hf:{REPO}", "--prompt", "x")
    assert code == 2 and why in err, err
    assert fetched(hub) <= {"config.json", "tokenizer_config.json", "generation_config.json"}  # the JSON that decides


def test_a_cut_download_resumes_a_server_error_is_one_message(hub, versions, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # 10 MiB chunks: a tiny file shows no Range
    sha = hub.add_repo(REPO, versions[0])
    size = len(versions[0]["model.safetensors"])
    cut = size // 2 // 1024 * 1024
    hub.fail_file(REPO, "model.safetensors", after_bytes=cut)  # the connection drops halfway
    code, _, err = run(capsys, "pull", f"hf:{REPO}")
    assert code == 0, err
    ranges = [r.range for r in hub.requested("model.safetensors")]
    assert ranges == [None, f"bytes={cut}-"]  # the rest only
    blob = Path(os.environ["HF_HUB_CACHE"]) / "models--zoo-test--tiny-llama" / "snapshots" / sha / "model.safetensors"
    assert blob.read_bytes() == versions[0]["model.safetensors"]

    hub.add_repo("zoo-test/broken", versions[1])
    hub.fail_file("zoo-test/broken", "model.safetensors", after_bytes=size // 2)
    hub.fail_file("zoo-test/broken", "model.safetensors", status=500, times=10)
    code, _, err = run(capsys, "pull", "hf:zoo-test/broken")
    assert code == 2 and err.count("\n") == 1, err
    assert "hf:zoo-test/broken" in err and "500" in err and "again" in err
    hub.clear_faults()
    resolve.cache_clear()
    assert run(capsys, "pull", "hf:zoo-test/broken")[0] == 0  # the next try completes


def test_files_are_verified_against_the_hubs_hashes(hub, versions, capsys):
    sha = hub.add_repo(REPO, versions[0])
    assert run(capsys, "pull", f"hf:{REPO}")[0] == 0
    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--zoo-test--tiny-llama" / "snapshots" / sha
    for name in ("model.safetensors", "config.json"):  # an LFS file (sha256) and a small one (git sha1)
        blob = (snapshot / name).resolve()
        good = blob.read_bytes()
        blob.write_bytes(good[:-2] + b"  ")  # same size: only a hash tells
        resolve.cache_clear()
        code, _, err = run(capsys, "pull", f"hf:{REPO}")
        assert code == 2 and f"{name} in the cache does not match the hub's hash" in err, err
        blob.write_bytes(good)


def test_bad_references_unknown_repos_and_revisions_are_one_message(hub, versions, capsys):
    hub.add_repo(REPO, versions[0])
    for target, message in [
        ("hf:zoo-test/nope", "no such model repo"),
        (f"hf:{REPO}@v9", "no such revision"),
        ("hf:../../etc", "expected hf:ORG/NAME"),
        ("hub:x/y", "no installed plugin reaches 'hub:' references"),
    ]:
        code, _, err = run(capsys, "generate", target, "--prompt", "x")
        assert code == 2 and message in err, (target, err)


def test_python_api_and_show_take_references(hub, versions, tmp_path, capsys):
    sha = hub.add_repo(REPO, versions[0])
    model = zoo.open_model(f"hf:{REPO}")
    assert zoo.source_of(model)["reference"] == f"hf:{REPO}@{sha}"
    built = zoo.build_model(f"hf:{REPO}")
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(built(ids)[0], model(ids)[0])  # pretrained weights, not random ones
    saved = zoo.save(model, tmp_path / "art")
    assert json.loads((saved / "manifest.json").read_text())["parent"]["revision"] == sha
    code, out, _ = run(capsys, "show", f"hf:{REPO}")
    assert code == 0 and "hf-causal-lm" in out


def test_a_preset_path_and_eval_take_references(hub, versions, tmp_path, capsys):
    sha = hub.add_repo(REPO, versions[0])
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[models.tiny-from-hub]\ntype = "hf-causal-lm"\npath = "hf:{REPO}"\n')
    code, out, err = run(capsys, "generate", "tiny-from-hub", "--registry", str(registry), "--prompt", "hello the zoo",
                         "--max-new-tokens", "6", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["ids"] == greedy_ids(capsys, f"hf:{REPO}@{sha}")
    corpus = tmp_path / "heldout.txt"
    corpus.write_text("hello there the zoo has models\n" * 20)
    code, out, err = run(capsys, "eval", f"hf:{REPO}", "--data", str(corpus), "--json")
    assert code == 0, err
    assert json.loads(out)
    code, _, err = run(capsys, "export", f"hf:{REPO}", "--format", "hf", "--out", str(tmp_path / "exported"))
    assert code == 0, err
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\ntype = "hf-causal-lm"\npath = "hf:not a repo"\n')
    code, _, err = run(capsys, "show", "x", "--registry", str(bad))
    assert code == 2 and "expected hf:ORG/NAME" in err, err


def test_download_progress_is_left_on_for_a_terminal_and_off_for_logs(monkeypatch):
    import io

    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars, tqdm

    # as in a user's shell (the hub fixture turned bars off)
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", None)
    terminal = io.StringIO()
    terminal.isatty = lambda: True  # type: ignore[method-assign]
    try:
        for stream, disabled in ((terminal, False), (io.StringIO(), True)):
            enable_progress_bars()
            monkeypatch.setattr(sys, "stderr", stream)
            quiet_unless_terminal()
            assert are_progress_bars_disabled() is disabled
            bar = tqdm(total=10, file=stream)
            bar.update(10)
            bar.close()
            assert ("100%" in stream.getvalue()) is not disabled
    finally:
        enable_progress_bars()


def test_a_sharded_repo_fetches_the_shards_its_index_lists(hub, versions, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file, save_file

    whole = tmp_path / "whole.safetensors"
    whole.write_bytes(versions[0]["model.safetensors"])
    tensors = load_file(whole)
    names = sorted(tensors)
    files = {k: v for k, v in versions[0].items() if k != "model.safetensors"}
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, tmp_path / shard, metadata={"format": "pt"})
        files[shard] = (tmp_path / shard).read_bytes()
        weight_map.update(dict.fromkeys(part, shard))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    files["stale.safetensors"] = b"\0" * 64  # a top-level file the index does not name: never fetched
    sha = hub.add_repo(REPO, files)
    assert greedy_ids(capsys, f"hf:{REPO}") == greedy_ids(capsys, f"hf:{REPO}@{sha}")
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= fetched(hub)
    assert "stale.safetensors" not in fetched(hub)

    snapshot = Path(os.environ["HF_HUB_CACHE"]) / "models--zoo-test--tiny-llama" / "snapshots" / sha
    (snapshot / "model-00002-of-00002.safetensors").unlink()
    resolve.cache_clear()
    monkeypatch.setattr(importlib.import_module("huggingface_hub.constants"), "HF_HUB_OFFLINE", True)
    code, _, err = run(capsys, "generate", f"hf:{REPO}", "--prompt", "x")
    assert code == 2 and "lacks model-00002-of-00002.safetensors" in err, err


def test_an_adapter_repo_names_its_base_on_the_hub(hub, versions, tmp_path, capsys):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base_sha = hub.add_repo(REPO, versions[0])
    local = as_local_folder(versions[0], tmp_path / "base")
    tuned = peft.get_peft_model(
        AutoModelForCausalLM.from_pretrained(local),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    tuned.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    files = {p.name: p.read_bytes() for p in (tmp_path / "adapter").iterdir()}
    # as published: the base named by its hub id, as peft writes it for a model from the hub
    files["adapter_config.json"] = json.dumps({**config, "base_model_name_or_path": REPO}).encode()
    adapter_sha = hub.add_repo("zoo-test/tiny-adapter", files)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        want = tuned.merge_and_unload().eval()(input_ids=ids).logits
        model = zoo.open_model("hf:zoo-test/tiny-adapter").eval()
        torch.testing.assert_close(model(ids)[0], want, atol=1e-5, rtol=0)
    assert zoo.source_of(model)["reference"] == f"hf:zoo-test/tiny-adapter@{adapter_sha}"
    assert zoo.tokenizer_of(model) is not None  # the base's tokenizer comes along
    assert base_sha in str(resolve(REPO))

    files["adapter_config.json"] = json.dumps({**config, "base_model_name_or_path": str(local)}).encode()
    hub.add_repo("zoo-test/local-base", files)
    code, _, err = run(capsys, "generate", "hf:zoo-test/local-base", "--prompt", "x")
    assert code == 2 and "an adapter from the hub must name its base as a hub repo" in err, err


def test_the_parent_sha256_recorded_is_the_files_own_past_one_read_chunk(tmp_path):
    """The sha256 a fine-tune records for its hub parent (run.json, manifest.json): a file longer
    than one 1 MiB read is hashed whole, and an LFS blob's name is used only when it is a sha256."""
    from zoo_hf.hub import describe

    snapshot = tmp_path / "models--org--name" / "snapshots" / "abc123"
    blobs = tmp_path / "models--org--name" / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    big = os.urandom(2 * (1 << 20) + 17)
    (snapshot / "model.safetensors").write_bytes(big)  # a real file, not a blob link: hashed
    small = b'{"model_type": "llama"}'
    sha1_named = blobs / hashlib.sha1(small).hexdigest()  # a git blob id names a small file's blob
    sha1_named.write_bytes(small)
    (snapshot / "config.json").symlink_to(sha1_named)
    lfs = blobs / hashlib.sha256(b"weights").hexdigest()
    lfs.write_bytes(b"weights")
    (snapshot / "other.safetensors").symlink_to(lfs)
    files = describe(snapshot)["files"]
    assert files == {
        "model.safetensors": hashlib.sha256(big).hexdigest(),
        "config.json": hashlib.sha256(small).hexdigest(),
        "other.safetensors": hashlib.sha256(b"weights").hexdigest(),
    }
