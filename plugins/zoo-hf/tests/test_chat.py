"""Chat from a local Hugging Face folder: the tokenizer's chat template, every EOS id of
generation_config.json, JSONL conversations and `zoo chat`, against transformers' own output."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
import torch
import warm

import zoo
from zoo.cli import main

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<unk>", "<eos>", "<bos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        ["hello there how are you today the zoo has models"] * 20,
        trainers.BpeTrainer(vocab_size=80, special_tokens=SPECIALS),
    )
    bos = raw.token_to_id("<bos>")
    raw.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>", bos_token="<bos>"
    )
    tok.chat_template = TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(7)  # a seed whose greedy replies run 10 varied tokens before any stop id
    hf = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)  # a random model with varied greedy picks
    folder = tmp_path_factory.mktemp("chat") / "m"
    hf.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")]
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, hf, tok


def saved_with(chat_folder, folder, **generation):
    """The fixture's model and tokenizer saved to ``folder`` with its generation config changed
    (the fixture's own config is left as it was)."""
    import copy

    _, hf, tok = chat_folder
    original = copy.deepcopy(hf.generation_config)
    hf.generation_config.update(**generation)
    try:
        hf.save_pretrained(folder)
    finally:
        hf.generation_config = original
    tok.save_pretrained(folder)
    return folder


def hf_reply(hf, tok, messages, n=10):
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tok(ids, add_special_tokens=False)["input_ids"]])
    out = hf.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    return ids[0].tolist(), out[0, ids.shape[1] :].tolist()


def test_generate_chat_matches_transformers(chat_folder, capsys):
    folder, hf, tok = chat_folder
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello how are you"}]
    prompt, want = hf_reply(hf, tok, messages)
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    assert zoo.chat_ids(zoo.tokenizer_of(model), messages) == prompt
    assert sorted(model.stop_ids) == sorted(hf.generation_config.eos_token_id)
    args = ["generate", str(folder), "--chat", "--system", "be brief", "--prompt", "hello how are you"]
    assert main([*args, "--max-new-tokens", "10", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)  # one JSON line
    assert row["ids"] == want
    assert row["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello how are you"},
    ]
    assert main([*args, "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out == row["text"] + "\n"  # the reply alone: the templated prompt is not echoed


def test_a_second_eos_id_from_generation_config_stops(chat_folder, tmp_path, capsys):
    """Make the model's first greedy token an extra EOS id in generation_config.json: zoo stops there."""
    _, hf, tok = chat_folder
    messages = [{"role": "user", "content": "the zoo"}]
    _, want = hf_reply(hf, tok, messages, n=1)
    other = saved_with(chat_folder, tmp_path / "m", eos_token_id=[tok.eos_token_id, want[0]])
    conversation = tmp_path / "c.jsonl"
    conversation.write_text(json.dumps({"messages": messages}) + "\n")
    assert main(["generate", str(other), "--prompt-file", str(conversation), "--max-new-tokens", "8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)  # one JSON line
    # HF's output ends with the stop token; zoo reports the reason and leaves the token out
    assert want and row["ids"] == [] and row["finish_reason"] == "eos"


def test_zoo_chat_keeps_the_conversation(chat_folder, tmp_path):
    folder, hf, tok = chat_folder
    res = warm.run(
        ["chat", str(folder), "--max-new-tokens", "6"],
        input="hello\nhow are you\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    _, first = hf_reply(hf, tok, [{"role": "user", "content": "hello"}], n=6)
    reply = tok.decode(first, skip_special_tokens=True)
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": reply}]
    _, second = hf_reply(hf, tok, [*history, {"role": "user", "content": "how are you"}], n=6)
    lines = res.stdout.split("\n")
    assert lines[0].endswith(reply) and lines[1].endswith(tok.decode(second, skip_special_tokens=True))


def test_chat_needs_a_template(tmp_path, capsys):
    assert main(["generate", "minigpt-tiny", "--chat", "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    assert "ByteTokenizer has no chat template" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user"}]}\n')
    assert main(["generate", "minigpt-tiny", "--prompt-file", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_the_tokenizer_survives_save_load_and_export(chat_folder, tmp_path):
    """Saved as transformers saves it (BOS adding, chat template): the artifact and the exported
    folder load with AutoTokenizer, and zoo encodes the same ids before and after."""
    from transformers import AutoTokenizer

    folder, _, tok = chat_folder
    text = "hello how are you"
    want = tok(text).input_ids
    assert want[0] == tok.bos_token_id  # this tokenizer adds a BOS by default
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    assert zoo.tokenizer_of(model).encode(text) == want
    zoo.save(model, tmp_path / "art")
    back = zoo.load(tmp_path / "art")
    messages = [{"role": "user", "content": text}]
    assert zoo.tokenizer_of(back).encode(text) == want
    assert zoo.chat_ids(zoo.tokenizer_of(back), messages) == zoo.chat_ids(zoo.tokenizer_of(model), messages)
    assert main(["export", str(tmp_path / "art"), "--out", str(tmp_path / "hf")]) == 0
    for where in (tmp_path / "art", tmp_path / "hf"):
        loaded = AutoTokenizer.from_pretrained(where, local_files_only=True)
        assert loaded(text).input_ids == want and loaded.chat_template == TEMPLATE


def test_a_byte_level_minigpt_exports_a_real_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    zoo.save(zoo.build_model("minigpt-tiny"), tmp_path / "art")  # no tokenizer recorded: byte-level
    assert main(["export", str(tmp_path / "art"), "--out", str(tmp_path / "hf")]) == 0
    text = "The cat sat, naïvely."
    loaded = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert loaded(text).input_ids == list(text.encode("utf-8"))
    assert loaded.decode(list(text.encode("utf-8"))) == text


def test_a_trained_bpe_artifact_loads_in_transformers(tmp_path):
    from transformers import AutoTokenizer

    from zoo.lm.tokenizers import BPETokenizerSpec, train_bpe

    tok = train_bpe(BPETokenizerSpec(vocab_size=300), iter(["the cat sat on the mat. " * 50]))
    zoo.save(zoo.build_model("minigpt-tiny", vocab_size=300), tmp_path / "a", tokenizer=tok)
    loaded = AutoTokenizer.from_pretrained(tmp_path / "a", local_files_only=True)
    assert loaded("the cat sat").input_ids == tok.encode("the cat sat")
    assert loaded.eos_token == "<|endoftext|>" and loaded.eos_token_id == tok.eos_id


def test_generation_config_sampling_is_the_default(chat_folder, tmp_path, capsys):
    """A folder whose generation_config.json samples (do_sample, temperature, top_k) decodes that
    way unless --sampler says otherwise."""
    folder = saved_with(chat_folder, tmp_path / "m", do_sample=True, temperature=0.7, top_k=5)
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    assert model.default_sampler == {"type": "sample", "temperature": 0.7, "top_k": 5}

    def ids(*extra):
        args = ["generate", str(folder), "--prompt", "hello there", "--max-new-tokens", "12", "--json", "--seed", "3"]
        assert main([*args, *extra]) == 0
        return json.loads(capsys.readouterr().out)["ids"]

    default = ids()
    assert default == ids("--sampler", json.dumps(model.default_sampler))
    assert default != ids("--sampler", "greedy")


def test_an_artifact_keeps_the_generation_config(chat_folder, tmp_path):
    """Extra EOS ids and the sampling recipe survive zoo.save / zoo.load (and the artifact's
    generation_config.json is what transformers reads)."""
    from transformers import GenerationConfig

    folder = saved_with(chat_folder, tmp_path / "m", do_sample=True, temperature=0.7, top_k=5)
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    zoo.save(model, tmp_path / "art")
    back = zoo.load(tmp_path / "art")
    assert back.stop_ids == model.stop_ids and len(back.stop_ids) == 2
    assert back.default_sampler == model.default_sampler == {"type": "sample", "temperature": 0.7, "top_k": 5}
    assert GenerationConfig.from_pretrained(tmp_path / "art").eos_token_id == model.stop_ids


# the fixture's template with the assistant's part marked, so transformers can say which tokens are its
MARKED = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_fine_tuning_scores_exactly_the_assistant_tokens_transformers_marks(chat_folder, tmp_path):
    """zoo tells the assistant's tokens apart by rendering the conversation turn by turn; on a
    template with {% generation %} marks, that equals transformers' own assistant mask. Then a
    chat fine-tune of the HF model runs through `zoo train` on JSON lines."""
    from zoo.lm.records import encode_record

    _, _, tok = chat_folder
    tok.chat_template = MARKED
    try:
        folder = saved_with(chat_folder, tmp_path / "m")
    finally:
        tok.chat_template = TEMPLATE
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello how are you"},
        {"role": "assistant", "content": "the zoo has models"},
        {"role": "user", "content": "today"},
        {"role": "assistant", "content": "hello there"},
    ]
    marked = tok.__class__.from_pretrained(folder)
    want = marked.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    model = zoo.build_model({"type": "hf-causal-lm", "path": str(folder)})
    enc = encode_record(zoo.tokenizer_of(model), chat, "chat.jsonl:1")
    assert enc.ids == want["input_ids"]
    assert [int(s) for s in enc.scored] == want["assistant_masks"] and sum(enc.scored) > 4

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for _ in range(40)))
    trainer = {"type": "causal-lm", "max_steps": 4, "batch_size": 4, "context": 32, "progress": False}
    args = ["train", "--init-from", str(folder), "--trainer", json.dumps(trainer), "--data", str(data)]
    assert main([*args, "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    scored = (tmp_path / "run" / "data" / "scored.bin").read_bytes()
    assert 0 < sum(scored) < len(scored)


def test_int8_chat_from_a_llama_folder_replies_as_fp32_transformers(chat_folder, capsys, monkeypatch):
    """`zoo chat FOLDER --quantize int8`: every linear layer of the Llama runs int8 weights, and the
    greedy reply is transformers' fp32 one."""
    folder, hf, tok = chat_folder
    opened: list[torch.nn.Module] = []
    prepare = zoo.Runtime.prepare_for_inference

    def spy(self, model, quantize=None):
        opened.append(prepare(self, model, quantize))
        return opened[-1]

    monkeypatch.setattr(zoo.Runtime, "prepare_for_inference", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello how are you\n"))
    _, want = hf_reply(hf, tok, [{"role": "user", "content": "hello how are you"}], n=6)
    assert main(["chat", str(folder), "--max-new-tokens", "6", "--quantize", "int8"]) == 0
    assert capsys.readouterr().out.split("\n")[0].endswith(tok.decode(want, skip_special_tokens=True))
    (model,) = opened
    layers = [type(m) for m in model.modules() if type(m).__name__ == "Linear"]
    assert torch.nn.Linear not in layers and len(layers) == 2 * 7 + 1  # q k v o gate up down per layer, and the head
    assert all(t.__module__.startswith("torch.ao.nn.quantized") for t in layers)
    ids = torch.tensor([[1, 5, 9, 12, 30, 40]])
    with torch.inference_mode():
        got, want_logits = model(ids)[0], hf(ids).logits
    assert not torch.equal(got, want_logits) and float((got - want_logits).abs().mean() / want_logits.std()) < 0.05


PARITY_TEMPLATES = [
    TEMPLATE,
    MARKED,
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m.role == 'system' %}"
    "{% set ns.sys = m.content|trim %}{% endif %}{% endfor %}{% if ns.sys %}<<SYS>>{{ ns.sys }}<</SYS>>{% endif %}"
    "{%- for m in messages if m.role != 'system' %}{{ '<|' + m['role'] + '|>\\n' + m['content']|trim + eos_token }}"
    "{%- if loop.last and add_generation_prompt %}<|assistant|>{% endif %}{% endfor %}",
    "{{ messages|tojson }}{{ dict(a=1, b=[1, 2])|tojson(indent=2) }}{{ messages|map(attribute='role')|join(', ') }}"
    "{{ '%s-%d' % ('x', 3) }}{{ '{:>5}|'.format('ab') }}{{ (messages|length) * 2 }}{{ [1, 2] + [3] }}"
    "{% for k, v in messages[0]|dictsort %}{{ k }}={{ v }};{% endfor %}{{ none }}{{ 1700000000 }}{{ 7 // 2 }}"
    "{{ 2 ** 10 }}{{ 'x' ~ 3 ~ none }}{% for m in messages %}{{ m.reasoning_content }}{% endfor %}",
]


@pytest.mark.parametrize("template", range(len(PARITY_TEMPLATES)))
def test_zoo_renders_chat_templates_as_transformers_does(chat_folder, template):
    _, _, tok = chat_folder
    chat = [
        {"role": "system", "content": " be brief "},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there", "thinking": "hmm", "tool_calls": None},
    ]
    for add in (True, False):
        want = tok.apply_chat_template(
            chat, chat_template=PARITY_TEMPLATES[template], add_generation_prompt=add, tokenize=False
        )
        got = zoo.render_chat_template(
            PARITY_TEMPLATES[template], chat, add_generation_prompt=add, **tok.special_tokens_map
        )
        assert got == want


HANGS = "{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("place", ["tokenizer_config.json", "chat_template.jinja"])
def test_a_hostile_chat_template_is_refused_by_generate_chat_and_training(
    chat_folder, tmp_path, place, capsys, monkeypatch
):
    """Issue 27: a template that ran for minutes or took gigabytes is exit 2 in about a second, naming
    the folder and the bound, in `generate --chat`, `chat` and chat training data (no run folder)."""
    folder = saved_with(chat_folder, tmp_path / "m")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for template in (HANGS, "{{ 'a' * 10**8 }}"):
        if place == "chat_template.jinja":
            (folder / place).write_text(template)
        else:
            (folder / place).write_text(json.dumps({**config, "chat_template": template}))
        start = time.monotonic()
        assert main(["generate", str(folder), "--chat", "--prompt", "hi", "--max-new-tokens", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("zoo: error:") == 1 and f"{folder}: chat template refused" in err, err
        assert time.monotonic() - start < 20
    assert "past the bound of 1,000,000" in err
    if place == "chat_template.jinja":
        return  # the same tokenizer path below
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert main(["chat", str(folder), "--max-new-tokens", "2"]) == 2
    assert "chat template refused" in capsys.readouterr().err
    data = tmp_path / "chat.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]})
    )
    trainer = {"type": "causal-lm", "max_steps": 2, "batch_size": 1, "context": 16, "progress": False}
    args = ["train", "--init-from", str(folder), "--trainer", json.dumps(trainer), "--data", str(data)]
    assert main([*args, "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "chat.jsonl:1: " in err and "chat template refused" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "generation_config.json: not valid JSON"),
        ('{"temperature": "hot", "do_sample": true}', "generation_config.json: temperature hot is not a valid value"),
        ('{"eos_token_id": "x"}', "generation_config.json: eos_token_id x is not a valid value"),
        ("[1, 2]", "generation_config.json: expected a JSON object"),
    ],
)
def test_an_invalid_generation_config_is_refused_not_ignored(chat_folder, tmp_path, capsys, text, message):
    """Issue 27: transformers falls back to defaults without a word; zoo names the file, exit 2."""
    folder = saved_with(chat_folder, tmp_path / "m")
    (folder / "generation_config.json").write_text(text)
    assert main(["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("zoo: error:") == 1 and message in err, err


def test_a_tokenizer_that_panics_at_encode_is_one_message(chat_folder, tmp_path, capsys):
    """Issue 27: a pre-tokenizer regex past Oniguruma's backtracking limit panics in Rust at encode
    time; the load was guarded, now the encode is too."""
    folder = saved_with(chat_folder, tmp_path / "m")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": "(a|aa)+$"}, "behavior": "Isolated", "invert": False}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    assert main(["generate", str(folder), "--prompt", "a" * 30000 + "c", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("zoo: error:") == 1 and "the tokenizer failed to encode text (PanicException" in err, err
