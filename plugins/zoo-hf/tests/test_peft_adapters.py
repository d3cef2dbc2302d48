"""LoRA adapters and peft, both ways, on a tiny Llama (nn.Linear) and a tiny GPT-2 (Conv1D, stored
(in, out)): peft loads what a zoo LoRA run saves, and zoo opens what peft saves; the logits equal."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import zoo
from zoo.cli import main

peft = pytest.importorskip("peft")

TRAINER = {"type": "causal-lm", "max_steps": 3, "batch_size": 4, "context": 16, "lr": 0.05, "progress": False}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, make_llama):
    """A Hugging Face Llama folder with its tokenizer, and a zoo artifact of a GPT-2 (byte-level)."""
    root = tmp_path_factory.mktemp("peft")
    corpus = root / "c.txt"
    corpus.write_text("".join(f"{i}: how vexingly quick daft zebras jump!\n" for i in range(200)))
    torch.manual_seed(0)
    zoo.save(zoo.build_model("hf-gpt2-tiny"), root / "gpt2")  # transformers reads it too
    return {"llama": make_llama(root / "llama"), "gpt2": root / "gpt2", "corpus": corpus}


def hf_logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def zoo_logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids)[0]


@pytest.mark.parametrize("base", ["llama", "gpt2"])
def test_peft_loads_what_a_zoo_lora_run_saves(bases, tmp_path, base):
    lora = {**TRAINER, "lora": {"rank": 4, "alpha": 8.0, "targets": ["*attn*", "*mlp*"]}}
    zoo.train(lora, tmp_path / "run", init_from=bases[base], data=bases["corpus"], lora=True)
    adapter = tmp_path / "run" / "adapter"
    hf = AutoModelForCausalLM.from_pretrained(bases[base])
    ids = torch.randint(0, hf.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    before = hf_logits(hf, ids)
    tuned = peft.PeftModel.from_pretrained(hf, adapter)
    want = zoo_logits(zoo.load(tmp_path / "run" / "model"), ids)  # zoo's merged model
    torch.testing.assert_close(hf_logits(tuned, ids), want, atol=1e-5, rtol=0)
    assert not torch.allclose(before, want, atol=1e-4)  # the adapter trained: a real change
    config = tuned.peft_config["default"]
    assert (config.r, config.lora_alpha, config.fan_in_fan_out) == (4, 8.0, base == "gpt2")
    assert config.base_model_name_or_path == str(bases[base].resolve())
    torch.testing.assert_close(zoo_logits(zoo.open_model(adapter, zoo.default_config()), ids), want, atol=1e-5, rtol=0)


# per-layer rank and alpha, rsLoRA; GPT-2's adapter says fan_in_fan_out=False, as peft's users
# often leave it: peft then transposes each Conv1D anyway (with a warning), and so must zoo
PEFT_MADE = {
    "llama": {"target_modules": ["q_proj", "v_proj", "down_proj"], "rank_pattern": {"v_proj": 2}},
    "gpt2": {"target_modules": ["c_attn", "c_proj"], "alpha_pattern": {"attn.c_proj": 3.0}},
}


@pytest.mark.parametrize("base", ["llama", "gpt2"])
def test_zoo_opens_an_adapter_peft_made(bases, tmp_path, base, capsys):
    hf = AutoModelForCausalLM.from_pretrained(bases[base])
    config = peft.LoraConfig(r=4, lora_alpha=8, use_rslora=True, task_type="CAUSAL_LM", **PEFT_MADE[base])
    tuned = peft.get_peft_model(hf, config)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    tuned.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(bases[base])  # peft records the folder it was given
    ids = torch.randint(0, hf.config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    want = hf_logits(tuned.merge_and_unload(), ids)
    opened = zoo.open_model(tmp_path / "adapter", zoo.default_config())
    torch.testing.assert_close(zoo_logits(opened, ids), want, atol=1e-5, rtol=0)
    if base == "llama":  # through the commands that open models: the base's tokenizer comes along
        capsys.readouterr()
        assert main(["generate", str(tmp_path / "adapter"), "--prompt", "quick", "--max-new-tokens", "2"]) == 0


def test_an_adapter_for_another_base_is_refused(bases, tmp_path, capsys):
    hf = AutoModelForCausalLM.from_pretrained(bases["gpt2"])
    peft.get_peft_model(hf, peft.LoraConfig(r=2, target_modules=["c_attn"])).save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "base_model_name_or_path": "../x"}))
    (tmp_path / "x").symlink_to(bases["llama"])
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "adapter"), "--prompt", "x", "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err
    assert "adapts transformer.h.0.attn.c_attn, which is not a linear layer of the base" in err, err
