"""Data in the forms people have it: JSON-lines records (documents packed with EOS, chats scored on
the assistant's tokens only), Hugging Face `datasets` local files, and datasets from Python."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.lm.records import encode_record, read_hf_dataset, read_jsonl
from zoo.lm.specs import CausalLMTrainerSpec
from zoo.lm.text_data import IGNORE, tokenize_to_file
from zoo.lm.tokenizers import ByteTokenizer
from zoo.runtime import Runtime

LM = {"type": "minigpt", "vocab_size": 256, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 32}
DOCS = [f"document number {i} says hello." for i in range(40)]


class EosBytes(ByteTokenizer):
    eos_id = 0  # NUL never appears in text


class ChatBytes(EosBytes):
    """Bytes with a chat template: ``<role>content\\x01`` per message, ``<assistant>`` to open a reply."""

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = "".join(f"<{m['role']}>{m['content']}\x01" for m in messages)
        return self.encode(text + ("<assistant>" if add_generation_prompt else ""))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_documents_are_packed_with_eos_between_them(tmp_path):
    data = write_jsonl(tmp_path / "docs.jsonl", [{"text": d, "id": i} for i, d in enumerate(DOCS)])
    tokens, scored = tokenize_to_file(read_jsonl(data, {}), EosBytes(), tmp_path / "cache")
    want = b"".join(d.encode() + b"\x00" for d in DOCS)
    assert bytes(np.asarray(tokens, dtype=np.uint8)) == want
    assert scored is not None and bool(np.all(scored == 1))


def test_a_chat_is_scored_on_the_assistant_tokens_only(tmp_path):
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    enc = encode_record(ChatBytes(), chat, "x:1")
    text = bytes(enc.ids).decode()
    assert text == "<system>be brief\x01<user>hi\x01<assistant>hello\x01<user>bye\x01<assistant>ciao\x01"
    scored = "".join(c for c, s in zip(text, enc.scored, strict=True) if s)
    assert scored == "hello\x01ciao\x01"  # the replies and their closing token, nothing the user wrote

    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}] * 30)
    model = zoo.build_model(LM)
    model.zoo_tokenizer = ChatBytes()
    trainer = CausalLMTrainerSpec(context=24, progress=False).build()
    task = trainer.make_task(model, Runtime(device="cpu"), data, tmp_path / "cache", False)
    _, y = task.sample(torch.Generator().manual_seed(0), 16)
    scored_targets = bytes(int(t) for t in y[y != IGNORE]).decode()
    assert set(scored_targets) <= set("hellociao\x01") and (y == IGNORE).any()


def test_chat_training_through_zoo_train_learns_the_replies(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"q{i % 5}"}, {"role": "assistant", "content": "yes"}]}
        for i in range(200)
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    spec = zoo.model_spec(LM)
    model = zoo.attach(spec.build(), spec, tokenizer=ChatBytes())
    trainer = CausalLMTrainerSpec(max_steps=60, batch_size=16, context=24, lr=1e-2, progress=False).build()
    result = trainer.fit(model, Runtime(device="cpu"), tmp_path / "run", data=data)
    assert result.metrics["val_loss"] < 0.3  # "yes\x01" after "<assistant>" is all there is to learn


def test_bad_records_name_the_file_and_line(tmp_path, capsys):
    cases = {
        '{"text": "fine"}\n{"txt": "typo"}\n': ":2: no 'text' text or 'messages' list (fields: txt)",
        '{"text": "fine"}\n\n{"text": oops}\n': ":3:",
        '{"messages": [{"role": "robot", "content": "x"}]}\n': ":1: messages.0.role:",
        '{"messages": [{"role": "user", "content": "only a question"}]}\n': ":1: the conversation has no assistant",
        "[1, 2]\n": ":1: a record is a JSON object",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_text(text)
        with pytest.raises(zoo.DataError) as err:
            tokenize_to_file(read_jsonl(path, {}), EosBytes(), tmp_path / f"cache{i}")
        assert f"{path}{message}" in str(err.value)
    args = ["train", "--model", json.dumps(LM), "--trainer", '{"type": "causal-lm", "max_steps": 2, "context": 8}']
    assert main([*args, "--data", str(tmp_path / "bad0.jsonl"), "--out", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad0.jsonl'}:2" in err and "Traceback" not in err
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "assistant", "content": "hi"}]}])
    with pytest.raises(zoo.DataError, match=r"chat\.jsonl:1: a conversation needs a tokenizer with a chat template"):
        tokenize_to_file(read_jsonl(chat, {}), ByteTokenizer(), tmp_path / "c")


@pytest.mark.parametrize("kind", ["parquet", "json", "csv", "text"])
def test_hf_datasets_local_files_offline(tmp_path, kind, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    table = datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))})
    path = tmp_path / f"docs.{ {'json': 'jsonl', 'text': 'txt'}.get(kind, kind) }"
    if kind == "parquet":
        table.to_parquet(str(path))
    elif kind == "json":
        table.to_json(str(path))
    elif kind == "csv":
        table.to_csv(str(path), index=False)
    else:
        path.write_text("\n".join(DOCS) + "\n")
    parts = read_hf_dataset(path, {})
    tokens, _ = tokenize_to_file(parts, EosBytes(), tmp_path / "cache")
    assert bytes(np.asarray(tokens, dtype=np.uint8)) == b"".join(d.encode() + b"\x00" for d in DOCS)


def test_hf_datasets_through_zoo_train_and_a_bad_file(tmp_path, capsys):
    import datasets

    datasets.Dataset.from_dict({"body": DOCS * 10}).to_parquet(str(tmp_path / "docs.parquet"))
    trainer = {
        "type": "causal-lm",
        "max_steps": 3,
        "context": 16,
        "batch_size": 4,
        "progress": False,
        "data_options": {"text_field": "body"},
    }
    args = ["train", "--model", json.dumps(LM), "--trainer", json.dumps(trainer), "--device", "cpu"]
    assert main([*args, "--data", str(tmp_path / "docs.parquet"), "--out", str(tmp_path / "r")]) == 0
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    assert main([*args, "--data", str(tmp_path / "broken.parquet"), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "broken.parquet: `datasets` could not read it as parquet" in err and "Traceback" not in err


class Pairs(torch.utils.data.Dataset):
    """A map-style torch Dataset of (features, label) pairs: label = which feature is largest."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.x[i, :3].argmax())


def test_a_torch_dataset_from_python_trains_a_classifier_and_an_lm(tmp_path):
    net = {"type": "simplenet", "in_features": 6, "hidden": [32], "num_classes": 3}
    trainer = {"type": "classifier", "max_steps": 150, "batch_size": 32, "lr": 1e-2, "progress": False}
    result = zoo.train(trainer, tmp_path / "c", model=net, data=Pairs(800))
    assert result.metrics["val_accuracy"] > 0.8
    assert json.loads((tmp_path / "c" / "run.json").read_text())["data"] == "Pairs"

    lm_trainer = {"type": "causal-lm", "max_steps": 3, "context": 16, "batch_size": 4, "progress": False}
    result = zoo.train(lm_trainer, tmp_path / "l", model=LM, data=DOCS * 5)
    assert result.steps == 3 and (tmp_path / "l" / "model").is_dir()
    with pytest.raises(zoo.DataError, match=r"list\[0\]: each item must be an \(x, y\) pair"):
        zoo.train(trainer, tmp_path / "bad", model=net, data=[1, 2, 3])


class RewritingChat(EosBytes):
    """A template that writes the conversation's turn count first: every turn changes the start."""

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = f"[{len(messages)}]" + "".join(f"<{m['role']}>{m['content']}\x01" for m in messages)
        return self.encode(text + ("<assistant>" if add_generation_prompt else ""))


def test_a_template_that_rewrites_earlier_turns_is_refused():
    """The assistant's tokens are told apart by rendering turn by turn; a template whose later turns
    change earlier text (here the count at the start) cannot be scored that way: one message."""
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "bye"},
    ]
    with pytest.raises(zoo.DataError, match=r"^c\.jsonl:3: the chat template does not write this conversation turn"):
        encode_record(RewritingChat(), chat, "c.jsonl:3")
    encode_record(ChatBytes(), chat, "c.jsonl:3")  # the same conversation through a template that appends
