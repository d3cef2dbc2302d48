"""Every snippet in docs/writing-plugins.md and the README's Python section runs as written.

Blocks marked ``file=PATH`` are written into a fresh project; installing it is simulated the way
pip does it for discovery (a ``.dist-info`` with the project's entry points on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import tiny_llama

import zoo.api

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```(\w+)([^\n]*)\n(.*?)```", re.S)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall(path.read_text())]


def install_simulated(project: Path, site: Path) -> None:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in meta["entry-points"]["zoo"].items())
    (info / "entry_points.txt").write_text(f"[zoo]\n{eps}")


def test_writing_plugins_walkthrough(tmp_path, monkeypatch):
    project, site = tmp_path / "zoo-tinycnn", tmp_path / "site"
    doc = blocks(ROOT / "docs" / "writing-plugins.md")
    files = [(info.removeprefix("file="), body) for _, info, body in doc if info.startswith("file=")]
    assert {f for f, _ in files} >= {"pyproject.toml", "src/zoo_tinycnn/hooks.py", "tests/test_conformance.py"}
    for name, body in files:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(body)
    install_simulated(project, site)
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(ROOT)
    zoo.api._cached_config.cache_clear()  # the registry must see the newly "installed" plugin
    try:
        namespace: dict = {}
        exec(
            compile(
                (project / "tests" / "test_conformance.py").read_text(),
                "test_conformance.py",
                "exec",
                dont_inherit=True,
            ),
            namespace,
        )
        tests = [f for n, f in namespace.items() if n.startswith("test_")]
        assert tests
        for test in tests:
            test()
        for lang, info, body in doc:
            if lang == "python" and not info:
                exec(compile(body, "writing-plugins.md", "exec", dont_inherit=True), {})
    finally:
        zoo.api._cached_config.cache_clear()
        for mod in [m for m in sys.modules if m.startswith("zoo_tinycnn")]:
            del sys.modules[mod]


def test_readme_python_snippets(tmp_path, monkeypatch):
    shutil.copy(ROOT / "registry.toml", tmp_path / "registry.toml")
    monkeypatch.chdir(tmp_path)
    zoo.api._cached_config.cache_clear()
    # a client of `zoo serve` needs a server: tests/test_serve_http.py runs those against one
    snippets = [body for lang, info, body in blocks(ROOT / "README.md") if lang == "python" and info != "needs-server"]
    assert snippets
    try:
        for body in snippets:
            exec(
                compile(
                    body.replace('"classifier-quick"', '{"type": "classifier", "max_steps": 20, "progress": False}'),
                    "README.md",
                    "exec",
                    dont_inherit=True,
                ),
                {},
            )
    finally:
        zoo.api._cached_config.cache_clear()
    assert (tmp_path / "artifacts" / "net" / "manifest.json").is_file()


@pytest.mark.parametrize("doc", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_toml_blocks_parse(doc):
    for lang, _, body in blocks(ROOT / "docs" / doc):
        if lang == "toml":
            tomllib.loads(body)


# --------------------------------------------------------------------------- README command blocks
#
# Every `zoo ...` line of the README's command blocks runs, in-process (`zoo.cli.main`, one torch
# import for all), in a folder holding what the reader is assumed to have. What is substituted,
# and nothing else:
#  - every `zoo train` gets `--max-steps 2` and one validation batch (`--set trainers.NAME.eval_batches=1`)
#    appended: a short run, since the commands are what is tested;
#  - `/models/NAME` is a tiny Hugging Face folder made here: Llamas of byte vocabulary (`my-llama`,
#    `smollm2-135m`), a chat model with a BPE tokenizer and chat template (`my-instruct`,
#    `its-source`) and the same without its tokenizer files (`bpe-model-without-tokenizer`);
#  - the data files (`my_corpus.txt`, `folder_of_txt/`, `heldout.txt`, `images/`, `test.npz`,
#    `prompts.txt`, `chats.jsonl`) and `gpt2_dir/` (a tiny GPT-2) are made here;
#  - `runs/demo` is what `make demo` trains, for 2 steps; `./peft-adapter` is `runs/lora/adapter`
#    (peft's layout); `zoo chat` reads one line from stdin;
#  - `zoo schema > FILE` writes what the command printed.
# Not run: lines that need the network (`hf:` references, the hub presets' first fetch, `zoo pull`)
# — plugins/zoo-hf/tests/test_hub.py runs them against a local hub —, several processes
# (`--nproc`, torchrun), which tests/test_distributed.py runs, and `zoo serve`, a server that runs
# until it is stopped (tests/test_serve_*.py start and stop it).
NOT_RUN = ("hf:", "smollm2-135m-instruct", "--nproc", "zoo serve")
SLOW_README = ("--format onnx",)  # torch.onnx export: tens of seconds each here; in the slow run


def readme_commands() -> list[list[str]]:
    """The command blocks' `zoo` lines (continuations joined), each as argv without comments."""
    found = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if lang:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.startswith("zoo ") and not any(word in line for word in NOT_RUN):
                found.append(shlex.split(line, comments=True))
    return found


def chat_model(folder: Path, corpus: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    specials = ["<unk>", "<eos>", "<|user|>", "<|system|>", "<|assistant|>", "<|end|>"]
    raw.train_from_iterator([corpus], trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tiny_llama(folder, vocab=len(tok))
    tok.save_pretrained(folder)


def readme_world(where: Path) -> None:
    """What a reader of the README has at hand (see the list above)."""
    from pydoc_data.topics import topics

    import numpy as np
    from PIL import Image
    from transformers import GPT2Config, GPT2LMHeadModel

    corpus = "\n\n".join(topics.values())[:60_000]
    (where / "my_corpus.txt").write_text(corpus)
    (where / "heldout.txt").write_text(corpus[-2_000:])
    (where / "folder_of_txt").mkdir()
    for i in range(2):
        (where / "folder_of_txt" / f"{i}.txt").write_text(corpus[i * 20_000 : (i + 1) * 20_000])
    rng = np.random.default_rng(0)
    for label in ("circle", "square"):
        (where / "images" / label).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(where / "images" / label / f"{i}.png")
    np.savez(where / "test.npz", x=rng.normal(size=(64, 20)).astype("float32"), y=rng.integers(0, 4, 64))
    (where / "prompts.txt").write_text("The function\nA module\n")
    (where / "chats.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    models = where / "models"
    for name in ("my-llama", "smollm2-135m"):
        tiny_llama(models / name)
    chat_model(models / "my-instruct", corpus)
    shutil.copytree(models / "my-instruct", models / "its-source")
    bare = models / "bpe-model-without-tokenizer"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(models / "my-instruct" / name, bare / name)
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(where / "gpt2_dir")


def run_readme_line(argv: list[str], where: Path, monkeypatch, capsys) -> None:
    from zoo.cli import main

    argv = [a.replace("/models/", f"{where}/models/") for a in argv[1:]]
    argv = ["runs/lora/adapter" if a == "./peft-adapter" else a for a in argv]
    target = None
    if ">" in argv:
        argv, target = argv[: argv.index(">")], argv[argv.index(">") + 1]
    if argv[0] == "train":
        argv += ["--max-steps", "2", "--set", f"trainers.{argv[argv.index('--trainer') + 1]}.eval_batches=1"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi\n"))
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's --version
        code = exit_.code
    out = capsys.readouterr()
    assert code == 0, f"zoo {shlex.join(argv)}: exit {code}\n{out.err[-2000:]}"
    if target:
        (where / target).write_text(out.out)


@pytest.fixture
def readme_folder(tmp_path, monkeypatch, capsys) -> Path:
    pytest.importorskip("transformers")
    shutil.copy(ROOT / "registry.toml", tmp_path / "registry.toml")
    monkeypatch.chdir(tmp_path)
    zoo.api._cached_config.cache_clear()
    readme_world(tmp_path)
    demo = "zoo train --model minigpt-rope-small --trainer lm-demo --out runs/demo"  # `make demo`'s first step
    run_readme_line(shlex.split(demo), tmp_path, monkeypatch, capsys)
    yield tmp_path
    zoo.api._cached_config.cache_clear()


def test_readme_commands_run_as_written(readme_folder, monkeypatch, capsys):
    commands = [c for c in readme_commands() if not any(s in shlex.join(c) for s in SLOW_README)]
    assert len(commands) > 40
    for argv in commands:
        run_readme_line(argv, readme_folder, monkeypatch, capsys)
    assert (readme_folder / "eval.png").is_file() and (readme_folder / "hf_dir" / "config.json").is_file()
    assert json.loads((readme_folder / "registry.schema.json").read_text())["title"] == "zoo registry.toml"


@pytest.mark.slow
def test_readme_onnx_exports_run_as_written(readme_folder, monkeypatch, capsys):
    commands = [c for c in readme_commands() if any(s in shlex.join(c) for s in SLOW_README)]
    assert len(commands) == 2
    for argv in commands:
        run_readme_line(argv, readme_folder, monkeypatch, capsys)
