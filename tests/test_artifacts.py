"""Saving and loading: round trip, verification, refusal of pickle, atomic replacement."""

from __future__ import annotations

import json
import pickle
from typing import Literal

import pytest
import torch

import zoo
from zoo.storage import atomic_dir


@pytest.fixture
def saved(tmp_path, config):
    model = zoo.build_model("simplenet-small", config=config)
    path = zoo.save(model, tmp_path / "art", config=config)
    return model, path


def test_round_trip_gives_identical_outputs(saved, config):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.safetensors", "spec.json"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["plugin"]["distribution"] == "zoo-simplenet"
    assert manifest["parameters"] == sum(p.numel() for p in model.parameters())
    assert manifest["torch_version"] == torch.__version__.split("+")[0]
    loaded = zoo.load(path, config=config)
    x = torch.randn(5, 20)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.zoo_spec == model.zoo_spec


def test_existing_artifact_is_never_overwritten_silently(saved, config):
    model, path = saved
    with pytest.raises(zoo.ArtifactError, match="already exists"):
        zoo.save(model, path, config=config)
    zoo.save(model, path, config=config, overwrite=True)


def test_failed_write_leaves_the_old_artifact_intact(saved):
    _, path = saved
    before = (path / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError), atomic_dir(path, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("crash mid-save")
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["art"]  # no temp dirs left behind


def test_checksum_mismatch_is_refused(saved, config):
    _, path = saved
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(zoo.ArtifactError, match=r"model\.safetensors: sha256 .* does not match the manifest"):
        zoo.load(path, config=config)


def test_shape_mismatch_lists_the_tensors(saved, config):
    _, path = saved
    spec = json.loads((path / "spec.json").read_text())
    spec["hidden"] = [64, 32, 8]
    (path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(zoo.ArtifactError) as info:
        zoo.load(path, config=config)
    text = str(info.value)
    assert "missing: body.4.weight, body.4.bias" in text
    assert "wrong shape: body.2.weight (file (64, 64), model (32, 64))" in text


def test_pickle_is_never_loaded(tmp_path, config):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    art = tmp_path / "evil"
    art.mkdir()
    (art / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(zoo.ArtifactError, match="never loads pickle"):
        zoo.load(art, config=config)
    assert not marker.exists()


def test_unknown_plugin_in_spec_names_the_distribution(saved, config):
    _, path = saved
    (path / "spec.json").write_text(json.dumps({"type": "resnet-9000"}))
    with pytest.raises(zoo.ArtifactError, match=r"spec\.json: cannot rebuild.*pip install zoo-simplenet"):
        zoo.load(path, config=config)


def test_tied_weights_are_stored_once(tmp_path, config):
    from zoo.artifacts import load_into
    from zoo.storage import read_tensors, unique_state, write_tensors

    net = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    net[1].weight = net[0].weight
    tensors, aliases = unique_state(net)
    assert list(tensors) == ["0.weight"] and aliases == {"1.weight": "0.weight"}
    write_tensors(tmp_path / "w.safetensors", tensors)
    other = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    load_into(other, read_tensors(tmp_path / "w.safetensors"), aliases, "w")
    assert torch.equal(other[1].weight, net[0].weight)


def test_overwrite_replaces_only_a_zoo_artifact(tmp_path, config):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("keep me")
    model = zoo.build_model("simplenet-small", config=config)
    with pytest.raises(zoo.ArtifactError, match="not a zoo artifact"):
        zoo.save(model, folder, overwrite=True, config=config)
    assert (folder / "todo.txt").read_text() == "keep me"
    zoo.save(model, tmp_path / "art", config=config)
    zoo.save(model, tmp_path / "art", overwrite=True, config=config)  # its own artifact: replaced


def test_load_assigns_the_weights_without_initialising(tmp_path, monkeypatch):
    """zoo.load builds with meta parameters and assigns the file's tensors: no random init runs on
    real memory, tied weights come back as one parameter, nothing is left on the meta device."""
    model = zoo.build_model("minigpt-tiny").eval()
    zoo.save(model, tmp_path / "a")
    inits = []
    real_normal = torch.nn.init.normal_
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *a, **k: inits.append(t.is_meta) or real_normal(t, *a, **k))
    back = zoo.load(tmp_path / "a")
    assert inits and all(inits), "an initialiser ran on real memory while loading"
    assert back.head.weight is back.tok_emb.weight
    assert len(list(back.parameters())) == len(list(model.parameters()))
    assert not any(t.is_meta for t in (*back.parameters(), *back.buffers()))
    ids = torch.randint(0, 256, (2, 12))
    assert torch.equal(back(ids)[0], model(ids)[0])


class NormBufferSpec(zoo.ModelSpec):
    """A model whose build computes a buffer from its own weights (meta parameters cannot)."""

    type: Literal["norm-buffer"] = "norm-buffer"
    in_features: int = zoo.Field(3, description="inputs")
    num_classes: int = zoo.Field(2, description="classes")

    @property
    def input_shape(self):
        return (self.in_features,)

    def input_fields(self, shape):
        return {"in_features": shape[0]}

    def build(self):
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(3, 2)
                self.register_buffer("scale", self.lin.weight.detach().abs().sum(), persistent=False)

            def forward(self, x):
                return self.lin(x) * self.scale

        return Net()


def test_a_family_meta_parameters_cannot_build_loads_the_ordinary_way(tmp_path):
    from helpers import make_module

    @zoo.hookimpl
    def zoo_register_models(register):
        register(NormBufferSpec)

    registry = zoo.Registry(entry_points=False, env={})
    registry.add_plugin(make_module("nb", zoo_register_models=zoo_register_models), name="nb")
    cfg = zoo.Config(registry=registry)
    model = zoo.build_model("norm-buffer", config=cfg).eval()
    zoo.save(model, tmp_path / "a", config=cfg)
    back = zoo.load(tmp_path / "a", config=cfg)
    x = torch.randn(4, 3)
    assert not back.scale.is_meta and torch.isfinite(back(x)).all()


def test_an_artifact_in_the_earlier_tokenizer_layout_still_loads(tmp_path):
    """Before 0.3 the tokenizer lived in tokenizer/ and the manifest did not say where."""
    from zoo.lm.tokenizers import BPETokenizerSpec, train_bpe

    tok = train_bpe(BPETokenizerSpec(vocab_size=300), iter(["the cat sat on the mat. " * 50]))
    model = zoo.build_model("minigpt-tiny", vocab_size=300)
    zoo.save(model, tmp_path / "a", tokenizer=tok)
    (tmp_path / "a" / "tokenizer").mkdir()
    (tmp_path / "a" / "tokenizer.json").rename(tmp_path / "a" / "tokenizer" / "tokenizer.json")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    del manifest["tokenizer"]["dir"]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    back = zoo.load(tmp_path / "a")
    assert zoo.tokenizer_of(back).encode("the cat") == tok.encode("the cat")


def test_an_unknown_tokenizer_type_names_the_plugin_to_install(tmp_path):
    zoo.save(zoo.build_model("minigpt-tiny"), tmp_path / "a", tokenizer=zoo.ByteTokenizer())
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["tokenizer"]["type"] = "sentencepiece"
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(zoo.ArtifactError, match=r"tokenizer type 'sentencepiece' is not registered .*bpe, byte"):
        zoo.load(tmp_path / "a")


def _safetensors(path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)


def test_weights_are_read_once_and_checked_field_by_field(tmp_path):
    """zoo.load reads model.safetensors once: the checksum is of the bytes the tensors view."""
    from zoo.storage import Weights, sha256_file

    zoo.save(zoo.build_model("minigpt-tiny"), tmp_path / "a")
    weights = Weights(tmp_path / "a" / "model.safetensors")
    assert weights.sha256 == sha256_file(tmp_path / "a" / "model.safetensors")
    tensor = weights.tensors()["tok_emb.weight"]
    start = torch.frombuffer(weights.data, dtype=torch.uint8).data_ptr()
    assert start <= tensor.data_ptr() < start + len(weights.data)  # a view, not a copy
    values = torch.arange(6, dtype=torch.float32)
    # an unaligned header length: the tensor is copied out, with the right values
    for pad in range(4):  # metadata of some length makes the data start off a 4-byte boundary
        odd = {"t": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {"p": "x" * pad}}
        if (8 + len(json.dumps(odd).encode())) % 4:
            break
    _safetensors(tmp_path / "odd.safetensors", odd, values.numpy().tobytes())
    assert torch.equal(Weights(tmp_path / "odd.safetensors").tensors()["t"], values.view(2, 3))
    for header, match in (
        ({"t": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 48]}}, "offsets do not fit"),
        ({"t": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 24]}}, "offsets do not fit"),
        ({"t": {"dtype": "Q4", "shape": [6], "data_offsets": [0, 24]}}, "malformed"),
        ({"t": {"dtype": "F32", "shape": [-6], "data_offsets": [0, 24]}}, "malformed"),
        ([1, 2], "not a JSON object"),
    ):
        _safetensors(tmp_path / "bad.safetensors", header, values.numpy().tobytes())
        with pytest.raises(zoo.ArtifactError, match=match):
            Weights(tmp_path / "bad.safetensors")
    (tmp_path / "huge.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(zoo.ArtifactError, match="header of"):
        Weights(tmp_path / "huge.safetensors")
