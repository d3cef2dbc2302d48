"""Faults lose nothing: crashes mid-checkpoint, full disks, unwritable outputs, non-finite numbers,
corrupt artifacts and bad data each give a clear error and keep earlier work intact."""

from __future__ import annotations

import errno
import json
import struct

import pytest
import torch

import zoo
from zoo import checkpoints, storage
from zoo.checkpointer import Checkpointer
from zoo.files import read_json
from zoo.runtime import Runtime
from zoo.trainers.specs import ClassifierTrainerSpec

MODEL = {"type": "simplenet", "in_features": 8, "hidden": [16], "num_classes": 3, "dropout": 0.1}


def fit(config, out, *, resume=False, **trainer):
    torch.manual_seed(0)
    model = zoo.build_model(MODEL, config=config)
    spec = ClassifierTrainerSpec(
        **{
            "max_steps": 20,
            "batch_size": 16,
            "eval_every": 10,
            "checkpoint_every": 4,
            "keep_checkpoints": 10,
            "progress": False,
            **trainer,
        }
    )
    result = spec.build().fit(
        model,
        Runtime(device="cpu"),
        out,
        resume=resume,
        save_artifact=lambda p, trained: zoo.save(trained, p, config=config, overwrite=True),
    )
    return model, result


def fail_on_write(monkeypatch, nth: int, exc: BaseException) -> None:
    """Make the nth tensor-file write of the process fail (after writing a partial file)."""
    real, calls = storage.write_tensors, {"n": 0}

    def flaky(path, tensors, metadata=None):
        calls["n"] += 1
        if calls["n"] == nth:
            path.write_bytes(b"partial")
            raise exc
        return real(path, tensors, metadata)

    monkeypatch.setattr(checkpoints, "write_tensors", flaky)


def test_crash_mid_checkpoint_keeps_the_last_complete_one(config, tmp_path, monkeypatch):
    straight, _ = fit(config, tmp_path / "a")
    fail_on_write(monkeypatch, nth=3 * 3 + 2, exc=KeyboardInterrupt())  # inside the 4th checkpoint
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path / "b")
    root = tmp_path / "b" / "checkpoints"
    names = [p.name for p in Checkpointer(root.parent).step_dirs()]
    assert names == ["step-00000004", "step-00000008", "step-00000012"]
    assert not any(".tmp-" in p.name for p in root.iterdir())  # the half-written one was removed
    (root / ".step-00000016.tmp-killed").mkdir()  # what a SIGKILL would have left behind
    monkeypatch.undo()
    resumed, _ = fit(config, tmp_path / "b", resume=True)
    assert all(
        torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True)
    )
    assert not any(".tmp-" in p.name for p in root.iterdir())


def test_full_disk_is_a_clear_error_and_keeps_earlier_checkpoints(config, tmp_path, monkeypatch):
    fail_on_write(monkeypatch, nth=3 * 2 + 1, exc=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(
        zoo.TrainingError,
        match=r"checkpoint at step 12 could not be written .*No space left on device.*"
        r"last good checkpoint kept: .*step-00000008",
    ):
        fit(config, tmp_path / "r")
    monkeypatch.undo()
    for ckpt in Checkpointer(tmp_path / "r").step_dirs():
        read_json(ckpt / "state.json")
        checkpoints.read_tensors(ckpt / "model.safetensors")


def test_unwritable_out_is_a_clear_error(config, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(zoo.RunDirError, match="cannot write to --out"):
        fit(config, tmp_path / "file" / "run")
    with pytest.raises(zoo.RunDirError, match="is a file, not a folder"):
        fit(config, tmp_path / "file")


def test_nan_gradient_names_step_parameter_and_group(config, tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model(MODEL, config=config)
    calls = {"n": 0}

    def poison(grad):
        calls["n"] += 1
        return grad * float("nan") if calls["n"] == 7 else grad

    model.body[0].weight.register_hook(poison)
    spec = ClassifierTrainerSpec(max_steps=20, batch_size=16, checkpoint_every=4, progress=False)
    with pytest.raises(
        zoo.TrainingError,
        match=r"non-finite gradient at step 7 in body\.0\.weight \(param group 'decay'\).*"
        r"last good checkpoint kept: .*step-00000004",
    ):
        spec.build().fit(model, Runtime(device="cpu"), tmp_path / "r")
    assert (tmp_path / "r" / "checkpoints" / "step-00000004").is_dir()


def test_fp16_loss_scaling_skips_an_overflowing_step_and_says_so(config, tmp_path, monkeypatch):
    monkeypatch.setattr(Runtime, "grad_scaler", lambda self: torch.amp.GradScaler("cpu", init_scale=2.0**10))
    torch.manual_seed(0)
    model = zoo.build_model(MODEL, config=config)
    calls = {"n": 0}

    def overflow(grad):
        calls["n"] += 1
        return grad * float("inf") if calls["n"] == 5 else grad

    model.head.weight.register_hook(overflow)
    spec = ClassifierTrainerSpec(max_steps=10, batch_size=16, progress=False)
    result = spec.build().fit(model, Runtime(device="cpu"), tmp_path / "r")
    assert result.steps == 10
    events = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    skipped = [e for e in events if e.get("event") == "skipped"]
    assert [e["step"] for e in skipped] == [5] and skipped[0]["loss_scale"] == 2.0**9
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_with_another_model_is_refused(config, tmp_path):
    fit(config, tmp_path / "r", max_steps=8)
    files = {p: p.read_bytes() for p in sorted((tmp_path / "r").rglob("*")) if p.is_file() and p.name != ".zoo.lock"}
    spec = ClassifierTrainerSpec(max_steps=12, batch_size=16, progress=False)
    from zoo.training import train_from_config

    with pytest.raises(zoo.RunDirError, match="was started with a different model spec"):
        train_from_config(config, {**MODEL, "hidden": [32]}, spec, tmp_path / "r", resume=True)
    after = {p: p.read_bytes() for p in sorted((tmp_path / "r").rglob("*")) if p.is_file() and p.name != ".zoo.lock"}
    assert after == files  # refused before anything was written: run.json, checkpoints, model as they were


# --------------------------------------------------------------------------- corrupt artifacts


@pytest.fixture
def saved(tmp_path, config):
    model = zoo.build_model("simplenet-small", config=config)
    return zoo.save(model, tmp_path / "art", config=config)


def rewrite_weights(path, data: bytes) -> None:
    """Replace model.safetensors and fix the manifest's checksum (so the parser itself is tested)."""
    (path / "model.safetensors").write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["weights_sha256"] = storage.sha256_file(path / "model.safetensors")
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("cut", [4, 100, -50])
def test_truncated_weights_are_named(saved, config, cut):
    rewrite_weights(saved, (saved / "model.safetensors").read_bytes()[:cut])
    with pytest.raises(
        zoo.ArtifactError, match=r"model\.safetensors: not a readable safetensors file .*truncated or corrupt"
    ):
        zoo.load(saved, config=config)


def test_garbage_header_is_named(saved, config):
    rewrite_weights(saved, struct.pack("<Q", 12) + b"{not json!!}")
    with pytest.raises(zoo.ArtifactError, match="not a readable safetensors file"):
        zoo.load(saved, config=config)


def test_bit_flip_near_the_end_of_a_large_file_is_caught_by_the_checksum(tmp_path, config):
    """The weights span several read chunks (1 MiB each); the flipped byte is in the last one."""
    model = zoo.build_model({"type": "simplenet", "in_features": 512, "hidden": [1024], "num_classes": 4})
    art = zoo.save(model, tmp_path / "big", config=config)
    data = bytearray((art / "model.safetensors").read_bytes())
    assert len(data) > 2 * (1 << 20)
    data[-3] ^= 0x01
    (art / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(zoo.ArtifactError, match="does not match the manifest"):
        zoo.load(art, config=config)


def test_a_weight_of_another_dtype_is_an_error_not_garbage(saved, config):
    from safetensors.torch import save_file

    tensors = storage.read_tensors(saved / "model.safetensors")
    tensors["head.weight"] = tensors["head.weight"].half()
    save_file(tensors, str(saved / "model.safetensors"))
    rewrite_weights(saved, (saved / "model.safetensors").read_bytes())
    with pytest.raises(
        zoo.ArtifactError, match=r"wrong dtype: head\.weight \(file torch\.float16, model torch\.float32\)"
    ):
        zoo.load(saved, config=config)


def test_a_tiny_artifact_cannot_force_a_huge_allocation(saved, config):
    """spec.json asks for a 40 GB model: the header is checked against a meta-device build first."""
    import resource

    spec = json.loads((saved / "spec.json").read_text())
    (saved / "spec.json").write_text(json.dumps({**spec, "hidden": [100_000, 100_000]}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(zoo.ArtifactError, match="wrong shape"):
        zoo.load(saved, config=config)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no 40 GB build


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("manifest.json", "{oops", r"manifest\.json: not valid JSON"),
        ("spec.json", "[1, 2", r"spec\.json: not valid JSON"),
        ("manifest.json", '{"format_version": 99}', "unsupported format_version"),
        ("spec.json", '{"type": "simplenet", "hidden": "wide"}', r"spec\.json: cannot rebuild the model"),
    ],
)
def test_broken_metadata_files_are_named(saved, config, name, content, match):
    (saved / name).write_text(content)
    with pytest.raises(zoo.ArtifactError, match=match):
        zoo.load(saved, config=config)


@pytest.mark.parametrize("missing", ["manifest.json", "spec.json", "model.safetensors"])
def test_missing_files_are_named(saved, config, missing):
    (saved / missing).unlink()
    with pytest.raises(zoo.ArtifactError, match=missing.replace(".", r"\.")):
        zoo.load(saved, config=config)


def test_pickle_with_payload_in_a_checkpoint_never_runs(tmp_path, config):
    import pickle

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    fit(config, tmp_path / "r", max_steps=4)
    ckpt = tmp_path / "r" / "checkpoints" / "step-00000004"
    (ckpt / "optimizer.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises((zoo.ArtifactError, zoo.TrainingError)):
        fit(config, tmp_path / "r", resume=True, max_steps=8)
    assert not marker.exists()


# --------------------------------------------------------------------------- data


def test_bad_data_leaves_no_partial_run(config, tmp_path):
    from zoo.training import train_from_config

    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    lm = {"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 16, "progress": False}
    with pytest.raises(zoo.DataError, match="NUL byte"):
        train_from_config(config, "minigpt-tiny", lm, tmp_path / "run", data=tmp_path / "bin.txt")
    assert not (tmp_path / "run").exists()
    (tmp_path / "ok.txt").write_text("plenty of good text here. " * 100)
    train_from_config(config, "minigpt-tiny", lm, tmp_path / "run", data=tmp_path / "ok.txt")  # no --force needed


def test_huge_single_line_file_trains(config, tmp_path):
    """One line of 9.6 MB of multi-byte characters: more than one 8 MiB read chunk, cut safely."""
    from zoo.lm import text_data as text
    from zoo.training import train_from_config

    (tmp_path / "line.txt").write_text("é—x" * 1_600_000)  # 6 bytes each
    assert (tmp_path / "line.txt").stat().st_size > text.CHUNK_BYTES
    lm = {"type": "causal-lm", "max_steps": 2, "batch_size": 2, "context": 16, "progress": False}
    result = train_from_config(config, "minigpt-tiny", lm, tmp_path / "run", data=tmp_path / "line.txt")
    assert result.steps == 2
    tokens = (tmp_path / "run" / "data" / "tokens.bin").stat().st_size // 2  # uint16 per byte token
    assert tokens == (tmp_path / "line.txt").stat().st_size  # byte level: every byte, none lost or doubled
