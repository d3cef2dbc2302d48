"""HF models through zoo: offline builds, clear errors, artifacts both sides read, GPT-2 interop,
greedy parity with transformers' generate()."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from zoo_hf import convert

import zoo
import zoo.testing
from zoo.lm.generation import generate, last_logits_only
from zoo.lm.tokenizers import ByteTokenizer

GPT2 = {
    "type": "hf-causal-lm",
    "config": {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 256, "n_positions": 64},
}
LLAMA = {
    "type": "hf-causal-lm",
    "config": {
        "model_type": "llama",
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 64,
    },
}
TOK = ByteTokenizer()


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_conformance(spec):
    zoo.testing.check_model(spec)


def test_classifier_conformance():
    zoo.testing.check_model(
        {
            "type": "hf-classifier",
            "num_labels": 3,
            "config": {
                "model_type": "bert",
                "num_hidden_layers": 1,
                "hidden_size": 32,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "vocab_size": 100,
            },
        }
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"type": "hf-causal-lm"}, "exactly one of config"),
        ({"type": "hf-causal-lm", "config": {"n_layer": 2}}, "config needs a model_type"),
        (
            {"type": "hf-causal-lm", "config": {"model_type": "gtp2"}},
            r"config\.model_type: transformers knows no model_type 'gtp2'; did you mean 'gpt2'",
        ),
        (
            {"type": "hf-causal-lm", "path": "/nonexistent/model"},
            r"hf-causal-lm\.path: /nonexistent/model: no such directory",
        ),
    ],
)
def test_bad_specs_are_clear(spec, match):
    with pytest.raises(zoo.SpecError, match=match):
        zoo.build_model(spec)


def test_directory_without_config_is_clear(tmp_path):
    with pytest.raises(zoo.SpecError, match=r"no config\.json"):
        zoo.build_model({"type": "hf-causal-lm", "path": str(tmp_path)})


def test_local_directory_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(tmp_path / "gpt2")}).eval()
    ids = torch.randint(0, 100, (2, 7))
    torch.testing.assert_close(model(ids)[0], hf(ids).logits)


def test_artifact_is_read_by_zoo_and_by_transformers(tmp_path):
    model = zoo.build_model(LLAMA).eval()
    zoo.save(model, tmp_path / "art", tokenizer=TOK)
    ids = torch.randint(0, 256, (2, 9))
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "art", local_files_only=True).eval()
    ours = zoo.load(tmp_path / "art")
    expected = model(ids)[0]
    torch.testing.assert_close(theirs(ids).logits, expected)
    assert torch.equal(ours(ids)[0], expected)
    assert ours.zoo_spec.path is None and ours.zoo_spec.config["model_type"] == "llama"


def test_path_spec_artifact_survives_the_directory(tmp_path):
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32)).eval()
    hf.save_pretrained(tmp_path / "src")
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(tmp_path / "src")})
    zoo.save(model, tmp_path / "art")
    import shutil

    shutil.rmtree(tmp_path / "src")
    ids = torch.randint(0, 100, (1, 5))
    assert torch.equal(zoo.load(tmp_path / "art")(ids)[0], model.eval()(ids)[0])


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_zoo_greedy_equals_hf_generate(spec):
    torch.manual_seed(0)
    model = zoo.build_model(spec).eval()
    prompts = [[5, 17, 42, 9], [100, 3, 3, 250]]
    ours = generate(model, TOK, prompts, "greedy", max_new_tokens=20)
    with torch.inference_mode():
        theirs = model.hf.generate(
            torch.tensor(prompts),
            attention_mask=torch.ones(2, 4, dtype=torch.long),
            do_sample=False,
            max_new_tokens=20,
            min_new_tokens=20,
            pad_token_id=0,
        )
    assert ours.ids == theirs[:, 4:].tolist()


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_padding_never_changes_hf_sequences(spec):
    torch.manual_seed(0)
    model = zoo.build_model(spec).eval()
    batch = generate(model, TOK, ["hi", "a longer prompt"], "greedy", max_new_tokens=10)
    alone = generate(model, TOK, ["hi"], "greedy", max_new_tokens=10)
    assert batch.ids[0] == alone.ids[0]


def test_hf_cached_logits_equal_full_recompute():
    torch.manual_seed(0)
    model = zoo.build_model(LLAMA).eval()
    ids = torch.randint(0, 256, (2, 12))
    full, _ = model(ids)
    cache = model.new_cache(2, 64)
    parts = [model(ids[:, :5], cache)[0]] + [model(ids[:, t : t + 1], cache)[0] for t in range(5, 12)]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_a_prefill_can_keep_the_last_positions_logits_only(spec):
    """What decoding asks for (`last_logits_only`): the output layer on the last position alone."""
    torch.manual_seed(0)
    model = zoo.build_model(spec).eval()
    ids = torch.randint(0, 256, (2, 9))
    full, _ = model(ids)
    last, _ = model(ids, model.new_cache(2, 64), **last_logits_only(model.forward))
    assert last.shape == (2, 1, 256)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
    _, past = model.forward_with_past(ids, [], **last_logits_only(model.forward_with_past))
    assert model.forward_with_past(ids[:, -1:], past)[0].shape == (2, 1, 256)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("tie", [True, False])
def test_minigpt_to_gpt2_logits_match(activation, tie):
    torch.manual_seed(0)
    mini = zoo.build_model(
        {
            "type": "minigpt",
            "vocab_size": 96,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 4,
            "max_seq_len": 48,
            "activation": activation,
            "tie_weights": tie,
            "mlp_ratio": 3.0,
        }
    ).eval()
    hf = convert.to_transformers(mini)
    ids = torch.randint(0, 96, (3, 20))
    torch.testing.assert_close(hf(ids).logits, mini(ids)[0], atol=1e-4, rtol=0)


def test_export_and_import_round_trip_through_the_cli(tmp_path, capsys):
    from zoo.cli import main

    torch.manual_seed(0)
    mini = zoo.build_model(
        {
            "type": "minigpt",
            "vocab_size": 256,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 2,
            "max_seq_len": 32,
            "activation": "gelu_tanh",
        }
    ).eval()
    zoo.save(mini, tmp_path / "run" / "model", tokenizer=TOK)
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(hf(ids).logits, mini(ids)[0], atol=1e-4, rtol=0)
    assert main(["import", str(tmp_path / "hf"), "--as", "minigpt", "--out", str(tmp_path / "back")]) == 0
    back = zoo.load(tmp_path / "back")
    torch.testing.assert_close(back(ids)[0], mini(ids)[0], atol=1e-6, rtol=0)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 2  # never overwrites
    capsys.readouterr()


@pytest.mark.parametrize(
    ("field", "value", "match"), [("norm", "rmsnorm", "set norm = 'layernorm'"), ("bias", False, "GPT-2 has biases")]
)
def test_export_refuses_what_gpt2_cannot_express(field, value, match):
    mini = zoo.build_model(
        {
            "type": "minigpt",
            "vocab_size": 64,
            "d_model": 32,
            "n_layers": 1,
            "n_heads": 2,
            "max_seq_len": 16,
            field: value,
        }
    )
    with pytest.raises(zoo.ZooError, match=match):
        convert.to_transformers(mini)


def test_import_refuses_other_architectures(tmp_path):
    neox = {
        "model_type": "gpt_neox",
        "num_hidden_layers": 1,
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 256,
        "max_position_embeddings": 64,
    }
    model = zoo.build_model({"type": "hf-causal-lm", "config": neox})
    model.hf.save_pretrained(tmp_path / "neox")
    with pytest.raises(convert.ConversionError, match="model_type is 'gpt_neox'; gpt2 and llama convert"):
        convert.import_hf(tmp_path / "neox")


def test_local_tokenizer_comes_with_the_model(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        ["hello world zoo models"] * 20, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<eos>"])
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>")
    hf = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=32))
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(tmp_path / "m")})
    assert model.zoo_tokenizer.eos_id == tok.eos_token_id
    zoo.save(model, tmp_path / "art")
    loaded = zoo.load(tmp_path / "art")
    assert loaded.zoo_tokenizer.encode("hello zoo") == tok.encode("hello zoo", add_special_tokens=False)
    assert loaded.zoo_tokenizer.eos_id == tok.eos_token_id


def test_non_finite_config_values_are_refused():
    bad = {**GPT2["config"], "layer_norm_epsilon": float("inf")}
    with pytest.raises(zoo.SpecError, match="config values must be finite"):
        zoo.build_model({"type": "hf-causal-lm", "config": bad})


def _randomized(model):
    """Random weights everywhere (norm gains too), so a mapping mistake cannot hide behind init values."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    return model


@pytest.mark.parametrize("tied", [False, True])
def test_llama_shaped_minigpt_exports_to_and_imports_from_hf_llama(tmp_path, tied):
    """Both directions through the CLI: logits equal within 1e-4, greedy tokens equal."""
    from transformers import LlamaForCausalLM

    from zoo.cli import main

    torch.manual_seed(0)
    spec = {**zoo.model_spec("minigpt-llama-tiny").model_dump(), "tie_weights": tied, "rope_theta": 500.0}
    mini = _randomized(zoo.build_model(spec)).eval()
    zoo.save(mini, tmp_path / "art", tokenizer=TOK)
    assert main(["export", str(tmp_path / "art"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, mini(ids)[0], atol=1e-4, rtol=0)
        want = hf.generate(ids[:1, :8], max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 8:].tolist()
    assert generate(mini, TOK, [ids[0, :8].tolist()], "greedy", max_new_tokens=12).ids[0] == want
    # and back: an HF Llama folder (here one transformers wrote itself) imports as a Llama-shaped MiniGPT
    other = _randomized(LlamaForCausalLM(hf.config)).eval()
    other.save_pretrained(tmp_path / "hf2")
    assert main(["import", str(tmp_path / "hf2"), "--as", "minigpt", "--out", str(tmp_path / "back")]) == 0
    back = zoo.load(tmp_path / "back")
    assert back.zoo_spec.positions == "rope" and back.zoo_spec.kv_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(back(ids)[0], other(ids).logits, atol=1e-4, rtol=0)
        want = other.generate(ids[:1, :8], max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 8:].tolist()
    assert generate(back, TOK, [ids[0, :8].tolist()], "greedy", max_new_tokens=12).ids[0] == want


def test_llama_export_refuses_what_llama_cannot_express():
    mini = zoo.build_model({**zoo.model_spec("minigpt-llama-tiny").model_dump(), "qk_norm": True})
    with pytest.raises(zoo.ZooError, match="qk_norm = True"):
        convert.to_transformers(mini)
