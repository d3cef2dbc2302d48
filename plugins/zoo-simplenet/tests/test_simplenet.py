"""SimpleNet: every option builds, trains a step and keeps its shapes."""

from __future__ import annotations

import pytest
import torch

import zoo


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
@pytest.mark.parametrize("init", ["kaiming", "xavier", "default"])
def test_options(activation, norm, init):
    spec = {
        "type": "simplenet",
        "in_features": 6,
        "hidden": [16, 8],
        "num_classes": 3,
        "activation": activation,
        "norm": norm,
        "init": init,
        "dropout": 0.1,
    }
    model = zoo.build_model(spec)
    out = model(torch.randn(4, 6))
    assert out.shape == (4, 3)
    out.sum().backward()
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"none": "Linear", "batchnorm": "BatchNorm1d", "layernorm": "LayerNorm"}[norm] in kinds
    assert "Dropout" in kinds


def test_no_hidden_layers_is_logistic_regression():
    model = zoo.build_model({"type": "simplenet", "in_features": 5, "hidden": [], "num_classes": 2})
    assert [type(m).__name__ for m in model.modules()].count("Linear") == 1


def test_hook_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, zoo_simplenet.hooks\nassert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
