"""Device, precision and seeding decisions."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.runtime import Runtime


def test_auto_on_this_machine_is_cpu_fp32():
    rt = Runtime(zoo.RuntimeSpec())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert rt.device.type == expected
    if expected == "cpu":
        assert rt.precision == "fp32" and rt.autocast_dtype is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_cuda_is_a_clear_error():
    with pytest.raises(zoo.RuntimeConfigError, match=r"runtime.device = 'cuda:1' but CUDA is not available"):
        Runtime(device="cuda:1")


def test_fp16_on_cpu_is_refused():
    with pytest.raises(zoo.RuntimeConfigError, match="fp16-mixed' is not supported on the CPU"):
        Runtime(device="cpu", precision="fp16-mixed")


def test_bad_device_string_is_a_spec_error():
    with pytest.raises(zoo.SpecError, match=r"runtime\.device: device must be auto, cpu, cuda, cuda:N or mps"):
        Runtime(device="gpu0")


def test_bf16_autocast_on_cpu():
    rt = Runtime(device="cpu", precision="bf16-mixed")
    layer = torch.nn.Linear(4, 4)
    with rt.autocast():
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert not rt.grad_scaler().is_enabled()


def test_seeding_repeats_exactly():
    rt = Runtime(device="cpu", seed=7)
    rt.seed_everything()
    a = torch.randn(3)
    rt.seed_everything()
    assert torch.equal(a, torch.randn(3))


def test_prepare_moves_model_and_keeps_the_original(config):
    rt = Runtime(device="cpu")
    model = zoo.build_model("simplenet-small", config=config)
    assert rt.prepare(model) is model
    assert rt.to_device({"a": (torch.ones(1),)})["a"][0].device.type == "cpu"
