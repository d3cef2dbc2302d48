"""The generation loop on MiniGPT: cache correctness, padding, stopping, seeds, streaming, CLI."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.lm.generation import generate, last_logits_only, stream
from zoo.lm.tokenizers import ByteTokenizer

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    spec = {"type": "minigpt", "vocab_size": 256, "d_model": 48, "n_layers": 2, "n_heads": 4, "max_seq_len": 96}
    return zoo.build_model(spec).eval()


def greedy_without_cache(model, ids, n):
    ids = torch.tensor([ids])
    for _ in range(n):
        logits, _ = model(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[0].tolist()


def test_greedy_with_cache_equals_greedy_without(lm):
    prompt = TOK.encode("def main():")
    out = generate(lm, TOK, [prompt], "greedy", max_new_tokens=40)
    assert prompt + out.ids[0] == greedy_without_cache(lm, prompt, 40)


def test_padding_never_changes_a_sequence(lm):
    prompts = ["a", "The quick brown fox", "import numpy as np"]
    batch = generate(lm, TOK, prompts, "greedy", max_new_tokens=30)
    for i, p in enumerate(prompts):
        alone = generate(lm, TOK, [p], "greedy", max_new_tokens=30)
        assert alone.ids[0] == batch.ids[i]


@pytest.mark.parametrize("static", [False, True])
def test_each_row_samples_as_it_would_alone(lm, static):
    """Real sampling (temperature 1.3, top-p 0.95): row i of a batch, padded or not, draws exactly
    what its prompt draws alone with seed + i, independent of the other rows."""
    prompts = ["hi", "a much longer prompt here", "mid length"]
    sampler = {"type": "top-p", "p": 0.95, "temperature": 1.3}
    batch = generate(lm, TOK, prompts, sampler, max_new_tokens=24, seed=5, static=static)
    for i, prompt in enumerate(prompts):
        alone = generate(lm, TOK, [prompt], sampler, max_new_tokens=24, seed=5 + i, static=static)
        assert batch.ids[i] == alone.ids[0], f"row {i}"
    assert len({tuple(r) for r in batch.ids}) == 3  # the rows really sampled (no greedy ties)
    again = generate(lm, TOK, ["x", "x"], sampler, max_new_tokens=24, seed=5)
    assert again.ids[0] != again.ids[1]  # identical prompts in a batch give different samples


def test_same_seed_same_text_other_seed_other_text(lm):
    a = generate(lm, TOK, ["x"], {"type": "sample", "temperature": 1.5}, max_new_tokens=30, seed=1)
    b = generate(lm, TOK, ["x"], {"type": "sample", "temperature": 1.5}, max_new_tokens=30, seed=1)
    c = generate(lm, TOK, ["x"], {"type": "sample", "temperature": 1.5}, max_new_tokens=30, seed=2)
    assert a.ids == b.ids and a.ids != c.ids


def test_eos_min_new_tokens_and_stop_strings(lm):
    first = generate(lm, TOK, ["abc"], "greedy", max_new_tokens=10).ids[0]
    eos = first[2]
    out = generate(lm, TOK, ["abc"], "greedy", max_new_tokens=10, eos_ids=[eos])
    assert out.ids[0] == first[: first.index(eos)] and out.finish_reasons == ["eos"]
    late = generate(lm, TOK, ["abc"], "greedy", max_new_tokens=10, eos_ids=[eos], min_new_tokens=5)
    assert len(late.ids[0]) >= 5 and eos not in late.ids[0][:5]
    text = TOK.decode(first)
    stop = text[3:5]
    stopped = generate(lm, TOK, ["abc"], "greedy", max_new_tokens=10, stop=[stop])
    assert stopped.texts[0] == text[: text.index(stop)] and stopped.finish_reasons == ["stop"]


def test_each_sequence_stops_on_its_own(lm):
    prompts = ["abc", "zzzz zz"]
    free = generate(lm, TOK, prompts, "greedy", max_new_tokens=12)
    eos = free.ids[0][1]
    out = generate(lm, TOK, prompts, "greedy", max_new_tokens=12, eos_ids=[eos])
    for got, full in zip(out.ids, free.ids, strict=True):
        assert got == (full[: full.index(eos)] if eos in full else full)


def test_streaming_yields_the_same_text(lm):
    full = generate(lm, TOK, ["stream me"], {"type": "sample"}, max_new_tokens=25, seed=4)
    pieces = [c.deltas[0] for c in stream(lm, TOK, ["stream me"], {"type": "sample"}, max_new_tokens=25, seed=4)]
    assert "".join(pieces) == full.texts[0]


def test_prompt_longer_than_context_is_a_clear_error(lm):
    with pytest.raises(
        zoo.ZooError, match="prompt of 90 tokens \\+ max_new_tokens 10 exceeds the model's context of 96"
    ):
        generate(lm, TOK, ["x" * 90], "greedy", max_new_tokens=10)


def test_bf16_autocast_generation_on_cpu(lm):
    """Under bf16 autocast each row's tokens are the greedy tokens of the model run under the same
    autocast without a cache, one prompt at a time (not merely eight tokens of something)."""
    rt = zoo.Runtime(device="cpu", precision="bf16-mixed")
    out = generate(lm, TOK, ["abc", "de"], "greedy", max_new_tokens=8, runtime=rt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for prompt, ids in zip(["abc", "de"], out.ids, strict=True):
            start = TOK.encode(prompt)
            assert ids == greedy_without_cache(lm, start, 8)[len(start) :]


def test_generate_on_a_classifier_is_refused(config):
    net = zoo.build_model("simplenet-small", config=config)
    with pytest.raises(zoo.ProtocolError, match="samplers work on causal-lm models; model type 'simplenet'"):
        generate(net, TOK, ["x"], "greedy")


def test_cli_generate_json_and_stream(lm, tmp_path, capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    zoo.save(lm, tmp_path / "m", tokenizer=TOK)
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo two\n")
    assert (
        main(["generate", str(tmp_path / "m"), "--prompt-file", str(prompts), "--json", "--max-new-tokens", "5"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["one", "two two"] and all(len(r["ids"]) == 5 for r in rows)
    args = [
        "generate",
        str(tmp_path / "m"),
        "--prompt",
        "x",
        "--sampler",
        "creative",
        "--seed",
        "3",
        "--set",
        "samplers.creative.temperature=0.7",
        "--max-new-tokens",
        "6",
    ]
    assert main([*args, "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == streamed
    assert main(["generate", str(tmp_path / "m"), "--prompt", "x" * 200]) == 2
    assert "exceeds the model's context" in capsys.readouterr().err


def test_no_tokenizer_means_bytes_only_for_the_byte_vocabulary(lm, tmp_path, capsys):
    """A byte-vocabulary model with no tokenizer reads and writes bytes as always; one with a
    larger vocabulary is refused (not decoded as bytes) unless --tokenizer names one."""
    zoo.save(lm, tmp_path / "bytes")  # vocab 256, no tokenizer recorded
    assert main(["generate", str(tmp_path / "bytes"), "--prompt", "ab", "--max-new-tokens", "3"]) == 0
    capsys.readouterr()
    wide = zoo.build_model({**zoo.spec_of(lm).model_dump(), "vocab_size": 300})
    zoo.save(wide, tmp_path / "wide")
    args = ["generate", str(tmp_path / "wide"), "--prompt", "ab", "--max-new-tokens", "3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "300-token vocabulary but no tokenizer" in err and "zoo.save(model, PATH, tokenizer=" in err
    assert main([*args, "--tokenizer", "byte"]) == 0
    with pytest.raises(zoo.ZooError, match="MiniGPT: the model has a 300-token vocabulary"):
        generate(wide, None, ["ab"], max_new_tokens=2)


@pytest.mark.parametrize("prompts", [["def main():"], ["a", "The quick brown fox", "x = 1"]])
def test_static_decoding_equals_dynamic(lm, prompts):
    for sampler in ("greedy", {"type": "top-p", "p": 0.8}):
        dynamic = generate(lm, TOK, prompts, sampler, max_new_tokens=24, seed=3)
        static = generate(lm, TOK, prompts, sampler, max_new_tokens=24, seed=3, static=True)
        assert static.ids == dynamic.ids


def test_compiled_static_decoding_on_cpu():
    torch.manual_seed(0)
    tiny = zoo.build_model(
        {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 48}
    ).eval()
    compiled = generate(tiny, TOK, ["ab", "abcdef"], "greedy", max_new_tokens=12, compile=True)
    eager = generate(tiny, TOK, ["ab", "abcdef"], "greedy", max_new_tokens=12)
    assert compiled.ids == eager.ids
    assert compiled.first_step_seconds is not None and compiled.first_step_seconds > 0  # reported by --compile
    assert eager.first_step_seconds is None


def test_a_model_zoo_loads_decodes_with_its_weights_in_the_inference_dtype(tmp_path, monkeypatch):
    """bf16 runtime: a model zoo opens itself is cast once (no autocast at every step) and decodes
    what the same bf16 weights decode when cast by hand; a model the caller hands in keeps its dtype."""
    from zoo.runtime import Runtime

    torch.manual_seed(0)
    spec = {"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 48}
    zoo.save(zoo.build_model(spec), tmp_path / "m")
    runtime = Runtime(device="cpu", precision="bf16-mixed")
    assert runtime.inference_dtype == torch.bfloat16 and Runtime(device="cpu").inference_dtype == torch.float32
    seen: list[tuple[torch.dtype, bool]] = []
    prepare = Runtime.prepare_for_inference

    def watched(self, model, quantize=None):
        model = prepare(self, model, quantize)
        model.register_forward_pre_hook(
            lambda m, a: seen.append((next(m.parameters()).dtype, torch.is_autocast_enabled("cpu")))
        )
        return model

    monkeypatch.setattr(Runtime, "prepare_for_inference", watched)
    owned = generate(str(tmp_path / "m"), TOK, ["ab", "abcdef"], "greedy", max_new_tokens=10, runtime=runtime)
    assert seen and set(seen) == {(torch.bfloat16, False)}
    by_hand = zoo.load(tmp_path / "m").to(torch.bfloat16)
    for static in (False, True):
        again = generate(by_hand, TOK, ["ab", "abcdef"], "greedy", max_new_tokens=10, runtime=runtime, static=static)
        assert again.ids == owned.ids
    handed = zoo.load(tmp_path / "m")
    generate(handed, TOK, ["ab"], "greedy", max_new_tokens=4, runtime=runtime)
    assert next(handed.parameters()).dtype == torch.float32  # the caller's model is not cast


def test_static_decoding_needs_a_decode_step(config):
    hf = zoo.build_model("hf-gpt2-tiny", config=config)
    with pytest.raises(zoo.ZooError, match="has no decode_step for static decoding"):
        generate(hf, TOK, ["x"], "greedy", max_new_tokens=2, static=True)


def test_a_conversation_reuses_its_cache_and_decodes_the_same(monkeypatch):
    """zoo chat's History: a later turn computes only the tokens after what the cache holds (cut
    back to the common prefix when the prompt diverges) and draws exactly what a fresh run draws."""
    from zoo.lm.generation import History, stream
    from zoo.runtime import Runtime

    torch.manual_seed(0)
    model = zoo.build_model("minigpt-tiny").eval()
    runtime = Runtime(device="cpu")
    seen: list[int] = []
    real = type(model).forward

    def counting(self, input_ids, *args, **kwargs):
        seen.append(input_ids.shape[1])
        return real(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)

    def turn(prompt, cache=None):
        seen.clear()
        chunks = list(stream(model, None, [prompt], "greedy", max_new_tokens=6, runtime=runtime, cache=cache))
        return [c.tokens[0] for c in chunks], seen[0]

    history = History(model, runtime)
    first = list(b"Hello there")
    drawn, computed = turn(first, history.cache_for(first))
    history.record(first, drawn)
    assert computed == len(first)
    second = [*first, *drawn, *b" and then"]
    reused, computed = turn(second, history.cache_for(second))
    history.record(second, reused)
    assert computed == len(second) - (len(first) + len(drawn) - 1)  # the last drawn token was never fed
    assert reused == turn(second)[0]  # a fresh cache decodes the same tokens
    third = [*first[:4], *b"p me"]  # diverges early: the cache is cut back to the common prefix
    again, computed = turn(third, history.cache_for(third))
    assert computed == len(third) - 4 and again == turn(third)[0]


def test_batch_json_is_json_lines(lm, tmp_path, capsys, root, monkeypatch):
    monkeypatch.chdir(root)
    zoo.save(lm, tmp_path / "m", tokenizer=TOK)
    args = ["generate", str(tmp_path / "m"), "--prompt", "one", "--prompt", "two", "--max-new-tokens", "3"]
    assert main([*args, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and [json.loads(line)["prompt"] for line in lines] == ["one", "two"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("one") and out.count("-" * 40) == 1 and "\n" + "-" * 40 + "\ntwo" in out


def test_a_minigpt_prefill_can_keep_the_last_positions_logits_only():
    torch.manual_seed(0)
    model = zoo.build_model({"type": "minigpt", "vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2}).eval()
    ids = torch.randint(0, 256, (2, 9))
    full, _ = model(ids)
    keep = last_logits_only(model.forward)
    last, cache = model(ids, model.new_cache(2, 16), **keep)
    assert keep == {"logits_to_keep": 1} and last.shape == (2, 1, 256) and cache.length == 9
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
