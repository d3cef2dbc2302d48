"""Data sources: files and folders are read by the registered source for them; bad ones get one
clear message naming the file; data that does not fit the model names the fix."""

from __future__ import annotations

import numpy as np
import pytest
import warm

import zoo
from zoo.data.examples import synthetic
from zoo.data.sources import choose, open_data


@pytest.fixture
def registry(config):
    return config.registry


def test_csv_and_npz_load(tmp_path, registry):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    table = open_data(registry, tmp_path / "d.csv", "classifier")
    assert table.x.shape == (2, 2) and table.y.tolist() == [0, 1]
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.array([0, 1, 2, 1]))
    assert open_data(registry, tmp_path / "d.npz", "classifier").n_classes == 3
    (tmp_path / "c.csv").write_text("label,a\n1,5\n0,6\n")
    other = open_data(registry, tmp_path / "c.csv", "classifier", options={"label_column": "label"})
    assert other.y.tolist() == [1, 0] and other.x.flatten().tolist() == [5.0, 6.0]


def test_image_arrays_keep_their_shape(tmp_path, registry):
    np.savez(tmp_path / "img.npz", x=np.random.rand(6, 1, 16, 16), y=np.arange(6) % 3)
    data = open_data(registry, tmp_path / "img.npz", "classifier")
    assert data.input_shape == (1, 16, 16) and data.x.dtype.is_floating_point


def _image_folder(root, size=(8, 6), per_class=3, classes=("cat", "dog")):
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size[1], size[0], 3), 40 * c + i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_reads_classes_and_pixels(tmp_path, registry):
    root = _image_folder(tmp_path / "imgs")
    assert choose(registry, root, "classifier").name == "images"
    data = open_data(registry, root, "classifier")
    assert data.x.shape == (6, 3, 6, 8) and data.classes == ["cat", "dog"]
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert float(data.x[0].max()) <= 1.0 and abs(float(data.x[3, 0, 0, 0]) - 40 / 255) < 0.02
    grey = open_data(registry, root, "classifier", options={"image_mode": "L", "image_size": [4, 4]})
    assert grey.x.shape == (6, 1, 4, 4)


def test_image_folder_problems_name_the_file(tmp_path, registry):
    from PIL import Image

    root = _image_folder(tmp_path / "imgs")
    Image.new("RGB", (9, 9)).save(root / "dog" / "big.png")
    with pytest.raises(zoo.DataError, match=r"big\.png: 9x9 pixels, but .* is 8x6; .*image_size"):
        open_data(registry, root, "classifier")
    (root / "dog" / "big.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(zoo.DataError, match=r"big\.png: not a readable PNG or JPEG image"):
        open_data(registry, root, "classifier")
    with pytest.raises(zoo.DataError, match="image_mode must be one of RGB, L"):
        open_data(registry, root, "classifier", options={"image_mode": "CMYK"})
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(zoo.DataError, match="at least two"):
        open_data(registry, tmp_path / "one", "classifier")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("e.csv", "", "header row and at least one data row"),
        ("bad.csv", "a,label\nx,1\n", r"bad\.csv:2: 'x' is not a number"),
        ("ragged.csv", "a,b,label\n1,0\n", r"ragged\.csv:2: 2 fields, header has 3"),
        ("neg.csv", "a,label\n1,-1\n", "labels must be 0..C-1"),
        ("frac.csv", "a,label\n1,0.5\n", "whole numbers"),
        ("d.txt", "x", r"no classifier data source reads \.txt; known: \.csv, \.npz"),
    ],
)
def test_bad_files(tmp_path, registry, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(zoo.DataError, match=match):
        open_data(registry, tmp_path / name, "classifier")


def test_npz_wrong_keys_and_shapes(tmp_path, registry):
    np.savez(tmp_path / "k.npz", features=np.ones((2, 2)))
    with pytest.raises(zoo.DataError, match=r"expected arrays named 'x'.*'y'"):
        open_data(registry, tmp_path / "k.npz", "classifier")
    np.savez(tmp_path / "s.npz", x=np.ones((3, 2)), y=np.zeros(2, dtype=int))
    with pytest.raises(zoo.DataError, match=r"inputs must be \(N, \.\.\.\) and labels \(N,\)"):
        open_data(registry, tmp_path / "s.npz", "classifier")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(zoo.DataError, match=r"not a valid \.npz"):
        open_data(registry, tmp_path / "junk.npz", "classifier")


def test_data_format_names_a_source(tmp_path, registry):
    (tmp_path / "table.dat").write_text("a,label\n1,0\n2,1\n")
    assert open_data(registry, tmp_path / "table.dat", "classifier", data_format="csv").y.tolist() == [0, 1]
    with pytest.raises(zoo.UnknownNameError, match="did you mean 'csv'"):
        open_data(registry, tmp_path / "table.dat", "classifier", data_format="cvs")
    with pytest.raises(zoo.DataError, match="reads causal-lm data, not classifier data"):
        open_data(registry, tmp_path / "table.dat", "classifier", data_format="text")


def test_data_must_match_the_model(config, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 5)), y=np.arange(10) % 2)
    trainer = config.spec("trainers", "classifier-quick").build()
    with pytest.raises(zoo.DataMismatch, match=r"shape \(5,\) but the model takes \(20,\).*in_features=5") as err:
        trainer.dataset(config.spec("models", "simplenet-small"), tmp_path / "d.npz")
    assert err.value.fields == {"in_features": 5}
    np.savez(tmp_path / "l.npz", x=np.ones((10, 20)), y=np.arange(10))
    with pytest.raises(zoo.DataError, match="labels up to 9 but the model has 4 classes"):
        trainer.dataset(config.spec("models", "simplenet-small"), tmp_path / "l.npz")


def test_the_fix_names_the_preset_or_the_inline_spec(tmp_path, root):
    """`zoo train`'s hint changes the preset the user named, or the inline spec they wrote."""
    np.savez(tmp_path / "d.npz", x=np.ones((10, 5)), y=np.arange(10) % 2)

    def train(model: str) -> str:
        cmd = ["train", "--model", model, "--trainer", "classifier-quick"]
        cmd += ["--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run")]
        res = warm.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        return res.stderr

    assert "fix: --set models.simplenet-small.in_features=5" in train("simplenet-small")
    assert "fix: set in_features=5 in the inline model spec" in train('{"type": "simplenet"}')
    assert not (tmp_path / "run").exists()


def test_synthetic_is_deterministic_and_learnable():
    a, b = synthetic(100, (4,), 3, 0.0, 1), synthetic(100, (4,), 3, 0.0, 1)
    assert a.x.equal(b.x) and a.y.equal(b.y) and a.ceiling == 1.0
    train, val = a.split(0.2, seed=0)
    assert len(train.y) == 80 and len(val.y) == 20
    images = synthetic(32, (1, 4, 4), 2, 0.0, 1)
    assert images.input_shape == (1, 4, 4)
