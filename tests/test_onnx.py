"""`zoo export --format onnx`: the files run in onnxruntime and give the same logits as PyTorch; a
causal LM decodes through decoder_with_past.onnx exactly as zoo.generate does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import zoo
from zoo.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def export(tmp_path, model, name="m"):
    zoo.save(model, tmp_path / f"{name}-art")
    assert main(["export", str(tmp_path / f"{name}-art"), "--format", "onnx", "--out", str(tmp_path / name)]) == 0
    return tmp_path / name, json.loads((tmp_path / name / "onnx.json").read_text())


@pytest.mark.parametrize("preset", ["simplenet-small", "small-cnn-gray"])
def test_classifiers_match_pytorch_at_any_batch_size(tmp_path, preset):
    model = zoo.build_model(preset).eval()
    folder, meta = export(tmp_path, model)
    session = ort.InferenceSession(str(folder / "model.onnx"))
    shape = zoo.spec_of(model).input_shape
    for batch in (1, 5):
        x = torch.rand(batch, *shape)
        (logits,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(logits, model(x).detach().numpy(), atol=1e-5)
    assert meta["files"]["model.onnx"]["inputs"]["x"] == ["batch", *shape]


LLAMA_SHAPED = {"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False, "n_kv_heads": 1}


@pytest.mark.parametrize("variant", [{}, LLAMA_SHAPED], ids=["gpt2-shaped", "llama-shaped"])
def test_a_causal_lm_prefills_and_decodes_with_past(tmp_path, variant):
    torch.manual_seed(0)
    model = zoo.build_model("minigpt-tiny", **variant).eval()
    folder, meta = export(tmp_path, model)
    assert set(meta["files"]) == {"model.onnx", "decoder_with_past.onnx"}
    prefill = ort.InferenceSession(str(folder / "model.onnx"))
    step = ort.InferenceSession(str(folder / "decoder_with_past.onnx"))
    prompt = torch.randint(0, 256, (2, 7))
    logits, *kv = prefill.run(None, {"input_ids": prompt.numpy()})
    np.testing.assert_allclose(logits, model(prompt)[0].detach().numpy(), atol=1e-4)
    # greedy decoding through the cached graph equals zoo's own decoding loop
    ids, mask, names = prompt.numpy(), np.ones((2, 7), dtype=np.int64), [i.name for i in step.get_inputs()][2:]
    out = []
    token = logits[:, -1].argmax(-1)[:, None]
    for _ in range(8):
        out.append(token[:, 0])
        mask = np.concatenate([mask, np.ones((2, 1), dtype=np.int64)], axis=1)
        logits, *kv = step.run(None, {"input_ids": token, "attention_mask": mask, **dict(zip(names, kv, strict=True))})
        so_far = torch.cat([prompt, torch.from_numpy(np.stack(out, 1))], dim=1)
        want_logits = model(so_far)[0][:, -1:].detach().numpy()  # each step against a full forward
        np.testing.assert_allclose(logits, want_logits, atol=1e-4)
        token = logits[:, -1].argmax(-1)[:, None]
    want = zoo.generate(model, None, prompt.tolist(), "greedy", max_new_tokens=8).ids
    assert np.stack(out, 1).tolist() == want
    assert kv[0].shape[2] == ids.shape[1] + 8


def test_a_model_without_a_kvcache_exports_logits_only(tmp_path):
    model = zoo.build_model("gru-lm-small").eval()
    folder, meta = export(tmp_path, model)
    assert set(meta["files"]) == {"model.onnx"}
    ids = torch.randint(0, 256, (3, 11))
    (logits,) = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"input_ids": ids.numpy()})
    np.testing.assert_allclose(logits, model(ids)[0].detach().numpy(), atol=1e-4)


def test_an_unknown_format_lists_the_known_ones(tmp_path, capsys):
    zoo.save(zoo.build_model("simplenet-small"), tmp_path / "a")
    assert main(["export", str(tmp_path / "a"), "--format", "onxx", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'onnx'" in capsys.readouterr().err and not (tmp_path / "o").exists()
