"""Tabular data files: good ones load, bad ones give clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.data.tabular import load_table, synthetic


def test_csv_and_npz_load(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    table = load_table(tmp_path / "d.csv")
    assert table.x.shape == (2, 2) and table.y.tolist() == [0, 1]
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.array([0, 1, 2, 1]))
    assert load_table(tmp_path / "d.npz").n_classes == 3


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("e.csv", "", "header row and at least one data row"),
        ("bad.csv", "a,label\nx,1\n", r"bad\.csv:2: 'x' is not a number"),
        ("ragged.csv", "a,b,label\n1,0\n", r"ragged\.csv:2: 2 fields, header has 3"),
        ("neg.csv", "a,label\n1,-1\n", "labels must be 0..C-1"),
        ("frac.csv", "a,label\n1,0.5\n", "whole numbers"),
        ("d.txt", "x", "unsupported data file"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(zoo.DataError, match=match):
        load_table(tmp_path / name)


def test_npz_wrong_keys_and_shapes(tmp_path):
    np.savez(tmp_path / "k.npz", features=np.ones((2, 2)))
    with pytest.raises(zoo.DataError, match=r"expected arrays named 'x'.*'y'"):
        load_table(tmp_path / "k.npz")
    np.savez(tmp_path / "s.npz", x=np.ones((3, 2)), y=np.zeros(2, dtype=int))
    with pytest.raises(zoo.DataError, match=r"features must be \(N, F\) and labels \(N,\)"):
        load_table(tmp_path / "s.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(zoo.DataError, match=r"not a valid \.npz"):
        load_table(tmp_path / "junk.npz")


def test_data_must_match_the_model(config, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 5)), y=np.arange(10) % 2)
    trainer = config.spec("trainers", "classifier-quick").build()
    with pytest.raises(
        zoo.DataError, match=r"5 features but the model expects in_features=20; set models\.simplenet\.in_features=5"
    ):
        trainer.dataset(config.spec("models", "simplenet-small"), tmp_path / "d.npz")
    np.savez(tmp_path / "l.npz", x=np.ones((10, 20)), y=np.arange(10))
    with pytest.raises(zoo.DataError, match="labels up to 9 but the model has num_classes=4"):
        trainer.dataset(config.spec("models", "simplenet-small"), tmp_path / "l.npz")


def test_synthetic_is_deterministic_and_learnable():
    a, b = synthetic(100, 4, 3, 0.0, 1), synthetic(100, 4, 3, 0.0, 1)
    assert a.x.equal(b.x) and a.y.equal(b.y) and a.ceiling == 1.0
    train, val = a.split(0.2, seed=0)
    assert len(train.y) == 80 and len(val.y) == 20
