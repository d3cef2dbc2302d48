"""`zoo export --format onnx`: the files run in onnxruntime and give the same logits as PyTorch; a
causal LM decodes through decoder_with_past.onnx exactly as zoo.generate does."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import zoo
import zoo.testing
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder, meta = export(tmp_path, model)
    assert not [w for w in caught if "training mode" in str(w.message)]
    assert set(meta["files"]) == {"model.onnx", "decoder_with_past.onnx"} and "note" not in meta
    zoo.testing.check_onnx_decoding(model, folder, torch.randint(0, 256, (2, 7)))


def test_a_model_without_a_kvcache_exports_logits_only_and_says_why(tmp_path, capsys):
    model = zoo.build_model("gru-lm-small").eval()
    folder, meta = export(tmp_path, model)
    assert set(meta["files"]) == {"model.onnx"}
    assert "logits only" in meta["note"] and "zoo.PastTensors" in meta["note"]
    assert "note: logits only" in capsys.readouterr().err
    ids = torch.randint(0, 256, (3, 11))
    (logits,) = ort.InferenceSession(str(folder / "model.onnx")).run(None, {"input_ids": ids.numpy()})
    np.testing.assert_allclose(logits, model(ids)[0].detach().numpy(), atol=1e-4)


def test_an_unknown_format_lists_the_known_ones(tmp_path, capsys):
    zoo.save(zoo.build_model("simplenet-small"), tmp_path / "a")
    assert main(["export", str(tmp_path / "a"), "--format", "onxx", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'onnx'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_export_takes_what_generate_takes(tmp_path, capsys):
    """A preset name and a run folder as well as an artifact (`zoo.finetune.open_model`)."""
    assert main(["export", "simplenet-small", "--format", "onnx", "--out", str(tmp_path / "preset")]) == 0
    zoo.save(zoo.build_model("simplenet-small"), tmp_path / "run" / "model")
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "from-run")]) == 0
    assert (tmp_path / "preset" / "model.onnx").is_file() and (tmp_path / "from-run" / "model.onnx").is_file()
    assert main(["export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "no such artifact, run folder or model folder" in capsys.readouterr().err


def test_a_past_layout_that_does_not_match_the_tensors_is_named(tmp_path):
    """`zoo.PastTensors` is checked by one eager prefill before torch.export sees it."""
    from zoo.onnx_export import KVCachePast, export

    model = zoo.build_model("minigpt-tiny").eval()
    adapter = KVCachePast(model, model.new_cache(1, 2))
    layers, heads, head_dim = adapter.layout
    model.past_layout = lambda: (layers + 1, heads, head_dim)  # one layer too many
    model.forward_with_past = adapter.forward_with_past
    assert isinstance(model, zoo.PastTensors)
    with pytest.raises(zoo.ZooError, match=r"forward_with_past returned 6 tensors shaped .*\(2, 2, 0, 16\).* promises"):
        export(model, tmp_path)
