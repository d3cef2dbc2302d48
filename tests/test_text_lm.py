"""Text corpora, tokenizers and the causal-lm trainer."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import crash_sampling_at

import zoo
from zoo.lm.text_data import DefaultCorpus, iter_chunks, read_text_files, tokenize_to_file
from zoo.lm.tokenizers import BPETokenizerSpec, ByteTokenizer, train_bpe
from zoo.runtime import Runtime

TINY_LM = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 64}
QUICK = {
    "type": "causal-lm",
    "max_steps": 12,
    "batch_size": 4,
    "context": 32,
    "eval_every": 6,
    "eval_batches": 2,
    "checkpoint_every": 6,
    "progress": False,
    "schedule": {"name": "cosine", "warmup_steps": 2},
}


def test_default_corpus_needs_no_download():
    text = next(DefaultCorpus().chunks())
    assert len(text) > 100_000


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("first")
    (tmp_path / "skip.md").write_text("ignored")
    assert [s.path.name for s in read_text_files(tmp_path, {})] == ["b.txt", "a.txt"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "file is empty"),
        (b"   \n\n", "file is empty"),
        (b"text\x00\x01binary", "NUL byte at offset 4: a binary file"),
        (b"caf\xe9 latin-1", "not valid UTF-8 at byte 3"),
    ],
)
def test_bad_text_files(tmp_path, content, match):
    path = tmp_path / "f.txt"
    path.write_bytes(content)
    with pytest.raises(zoo.DataError, match=match):
        list(read_text_files(path, {})[0].chunks())


def test_chunks_never_split_a_character_or_lose_text(tmp_path):
    text = ("é" * 5 + "x") * 7  # a single huge line of multi-byte characters
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(iter_chunks(path, chunk_bytes=5))
    assert "".join(chunks) == text and len(chunks) > 3


def test_tokens_are_memory_mapped_and_reused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 100)
    parts = read_text_files(corpus, {})
    tokens, scored = tokenize_to_file(parts, ByteTokenizer(), tmp_path / "cache")
    assert isinstance(tokens, __import__("numpy").memmap) and len(tokens) == 1200 and scored is None
    stamp = (tmp_path / "cache" / "tokens.bin").stat().st_mtime_ns
    tokenize_to_file(parts, ByteTokenizer(), tmp_path / "cache")
    assert (tmp_path / "cache" / "tokens.bin").stat().st_mtime_ns == stamp


def test_bpe_round_trip():
    tok = train_bpe(BPETokenizerSpec(vocab_size=300), iter(["the cat sat on the mat. " * 50]))
    ids = tok.encode("the cat sat")
    assert tok.decode(ids) == "the cat sat" and len(ids) < len("the cat sat")
    assert tok.vocab_size <= 300 and tok.eos_id is not None


def fit_lm(config, out, resume=False, vocab_size=256, **trainer):
    torch.manual_seed(0)
    model = zoo.build_model({**TINY_LM, "vocab_size": vocab_size}, config=config)
    spec = config.spec("trainers", {**QUICK, **trainer})
    result = spec.build().fit(
        model,
        Runtime(device="cpu"),
        out,
        resume=resume,
        save_artifact=lambda p, trained: zoo.save(trained, p, config=config, overwrite=True),
    )
    return model, result


def test_lm_training_lowers_loss_and_saves_tokenizer(config, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    _, result = fit_lm(config, tmp_path / "run", data=str(corpus), max_steps=40, lr=3e-3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [x["val_loss"] for x in lines if x["split"] == "val"]
    assert val[-1] < val[0] - 1.0
    assert result.metrics["val_ppl"] == pytest.approx(torch.tensor(val[-1]).exp().item(), rel=1e-4)
    loaded = zoo.load(result.artifact, config=config)
    assert isinstance(loaded.zoo_tokenizer, ByteTokenizer)


def test_bpe_trainer_saves_and_restores_its_tokenizer(config, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("zoo models train and sample text quickly. " * 300)
    _, result = fit_lm(
        config, tmp_path / "run", data=str(corpus), vocab_size=300, tokenizer={"type": "bpe", "vocab_size": 280}
    )
    loaded = zoo.load(result.artifact, config=config)
    assert loaded.zoo_tokenizer.decode(loaded.zoo_tokenizer.encode("zoo models")) == "zoo models"
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["tokenizer"]["type"] == "bpe"


def test_lm_resume_is_exact(config, tmp_path, monkeypatch):
    from zoo.lm.trainer import CausalLMTask

    straight, _ = fit_lm(config, tmp_path / "a")
    restore = crash_sampling_at(monkeypatch, CausalLMTask, 9)
    with pytest.raises(KeyboardInterrupt):
        fit_lm(config, tmp_path / "b")
    restore()
    resumed, _ = fit_lm(config, tmp_path / "b", resume=True)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vocab_and_context_mismatches_are_clear(config, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc " * 1000)
    with pytest.raises(
        zoo.DataError,
        match=r"the tokenizer has 2\d\d tokens but the model's vocab_size is 256; set the model's vocab_size",
    ):
        fit_lm(config, tmp_path / "v", data=str(corpus), tokenizer={"type": "bpe", "vocab_size": 300})
    with pytest.raises(zoo.DataError, match="context 128 exceeds the model's max_seq_len 64"):
        fit_lm(config, tmp_path / "c", data=str(corpus), context=128)
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(zoo.DataError, match="fewer than context \\+ 1 = 33"):
        fit_lm(config, tmp_path / "s", data=str(tmp_path / "short.txt"))


def test_padding_targets_are_ignored_in_the_loss():
    from zoo.lm.trainer import IGNORE, lm_loss

    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    padded = targets.clone()
    padded[:, 3:] = IGNORE
    kept = torch.nn.functional.cross_entropy(logits[:, :3].flatten(0, 1), targets[:, :3].flatten())
    assert torch.allclose(lm_loss(logits, padded), kept)
    logits_changed = logits.clone()
    logits_changed[:, 3:] += 100.0  # scores at padded positions cannot move the loss
    assert torch.allclose(lm_loss(logits_changed, padded), kept)


def test_eos_targets_are_scored_when_the_pad_id_equals_the_eos_id(tmp_path):
    """Windows of a token stream hold no padding: a tokenizer whose pad id is its EOS id (common in
    HF models) must still be trained to emit EOS, so no target is dropped for its id."""
    from zoo.lm.specs import CausalLMTrainerSpec
    from zoo.lm.trainer import IGNORE

    class EosIsPad(ByteTokenizer):
        eos_id = 10  # "\n" ends every line
        pad_id = 10

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i}\n" for i in range(400)))
    model = zoo.build_model({"type": "minigpt", "vocab_size": 256, "d_model": 16, "n_layers": 1, "n_heads": 2})
    model.zoo_tokenizer = EosIsPad()
    trainer = CausalLMTrainerSpec(context=16, progress=False).build()
    task = trainer.make_task(model, Runtime(device="cpu"), corpus, tmp_path / "cache", False)
    _, targets = task.sample(torch.Generator().manual_seed(0), 32)
    assert (targets == 10).sum() > 32  # the EOS/pad id is there as a target...
    assert not (targets == IGNORE).any()  # ...and scored


def test_low_precision_logits_are_scored_without_an_fp32_copy_of_the_whole_batch(monkeypatch):
    """bf16 logits (B, T, V): the loss and its gradient equal the one-piece fp32 computation, and
    no fp32 tensor as large as the logits is ever created, forward or backward."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from zoo.lm import trainer

    torch.manual_seed(0)
    B, T, V = 4, 32, 256
    logits = torch.randn(B, T, V).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, V, (B, T))
    targets[0, :5] = trainer.IGNORE
    reference = logits.detach().float().requires_grad_()
    expected = torch.nn.functional.cross_entropy(
        reference.flatten(0, 1), targets.flatten(), ignore_index=trainer.IGNORE
    )
    expected.backward()

    class LargestFp32(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                    LargestFp32.numel = max(LargestFp32.numel, t.numel())
            return out

    monkeypatch.setattr(trainer, "CE_CHUNK_ELEMENTS", 8 * V)  # 8 rows at a time: 16 chunks
    with LargestFp32():
        loss = trainer.lm_loss(logits, targets)
        loss.backward()
    assert LargestFp32.numel <= 8 * V < B * T * V
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.float(), reference.grad, rtol=1e-2, atol=1e-4)  # bf16 rounding
