"""`zoo serve` over HTTP on 127.0.0.1: the official `openai` client (completions, chat, streaming),
plain requests as curl sends them, bad requests (400 naming the field, 401, 404, 413, 429 with
Retry-After), a client that disconnects, /health and /metrics, and 1,000 malformed requests."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import openai
import pytest
from serve_helpers import running, tiny_model

import zoo
from zoo.serving.app import Outbox, Stream
from zoo.serving.batcher import Update
from zoo.serving.protocol import Limits


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=5)


@pytest.fixture(scope="module")
def server(model):
    with running({"tiny": model}, max_batch=4, max_queue=4, limits=Limits(max_body_bytes=4096, max_tokens=300)) as s:
        yield s


def alone(model, prompt, sampler="greedy", n=12, seed=0, **kw):
    return zoo.generate(model, zoo.ByteTokenizer(), prompt, sampler, max_new_tokens=n, seed=seed, eos_ids=[], **kw)


def client(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)


def test_openai_client_completions_chat_and_streaming(server, model):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    done = c.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0)
    assert done.choices[0].text == alone(model, "hello").texts[0]
    assert done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (5, 12)
    seeded = c.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0.8, top_p=0.9, seed=7)
    expected = alone(model, "hello", {"type": "sample", "temperature": 0.8, "top_p": 0.9}, seed=7)
    assert seeded.choices[0].text == expected.texts[0]
    pieces = list(c.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"
    # a model without a chat template: a plain transcript ("user: ...\nassistant:")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    transcript = "system: be brief\nuser: hi\nassistant:"
    chat = c.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    assert chat.choices[0].message.content == alone(model, transcript, n=10).texts[0]
    stream = c.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 10


def test_plain_http_as_curl_sends_it(server, model):
    body = {"model": "tiny", "prompt": "zoo", "max_tokens": 5, "temperature": 0, "stop": "\n"}
    r = httpx.post(server.url + "/v1/completions", content=json.dumps(body))  # no content type, as curl -d
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == alone(model, "zoo", n=5, stop=["\n"]).texts[0]
    with httpx.stream("POST", server.url + "/v1/completions", json={**body, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<title>zoo serve</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("zoo_serve_queue_depth", "zoo_serve_batch_size", "zoo_serve_tokens_per_second", "zoo_serve_tokens"):
        assert f'{name}{{model="tiny"}}' in metrics or f'{name}_total{{model="tiny"}}' in metrics


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"prompt": "x"}, "model", 400),
        ({"model": "tiny", "prompt": "x", "max_tokens": 0}, "max_tokens", 400),
        ({"model": "tiny", "prompt": "x", "max_tokens": 301}, "max_tokens", 400),
        ({"model": "tiny", "prompt": "x", "temperature": "hot"}, "temperature", 400),
        ({"model": "tiny", "prompt": "x", "top_p": 1.5}, "top_p", 400),
        ({"model": "tiny", "prompt": "x", "seed": -1}, "seed", 400),
        ({"model": "tiny", "prompt": "x", "stop": ["a"] * 5}, "stop", 400),
        ({"model": "tiny", "prompt": "x", "n": 2}, "n", 400),
        ({"model": "tiny", "prompt": [300]}, "prompt", 400),
        ({"model": "tiny", "prompt": ""}, "prompt", 400),
        ({"model": "tiny", "prompt": "x", "sampler": "no-such-sampler"}, "sampler", 400),
        ({"model": "tiny", "prompt": "x", "sampler": "greedy", "temperature": 1}, "sampler", 400),
        ({"model": "nope", "prompt": "x"}, "model", 404),
    ],
)
def test_a_bad_request_gets_one_message_naming_the_field(server, body, field, status):
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(field)


def test_chat_fields_are_checked_too(server):
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "bot"}]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages.0")
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_body_size_and_prompt_length_limits(server):
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "x" * 5000})
    assert r.status_code == 413
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "x" * 400, "max_tokens": 200})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"  # 400 + 200 > 512


def test_a_full_queue_answers_429_with_retry_after(model):
    with running({"tiny": model}, max_batch=1, max_queue=2) as s, httpx.Client(timeout=10) as http:
        body = {"model": "tiny", "prompt": "q", "max_tokens": 2, "stream": True}
        with s.batchers["tiny"].paused():
            held = [http.stream("POST", s.url + "/v1/completions", json=body) for _ in range(2)]
            responses = [h.__enter__() for h in held]  # both wait in the queue (the loop is paused)
            r = http.post(s.url + "/v1/completions", json={**body, "stream": False})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "rate_limit_error"
        for h, response in zip(held, responses, strict=True):
            assert list(response.iter_lines())[-2] == "data: [DONE]"
            h.__exit__(None, None, None)


def test_a_client_that_disconnects_frees_its_row(model):
    """400 slow tokens take 4 s or more; a client gone after the first leaves the batch at once."""

    def freed(cancelled: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if s.state.outcomes.get(("tiny", "cancelled")) == cancelled and batcher.batch_size == 0:
                break
            time.sleep(0.02)
        assert batcher.batch_size == 0 and batcher.tokens_total < 200 * cancelled

    with running({"tiny": model}) as s:
        batcher = s.batchers["tiny"]
        body = {"model": "tiny", "prompt": "bye", "max_tokens": 400, "sampler": {"type": "slow-greedy", "delay": 0.01}}
        with httpx.stream("POST", s.url + "/v1/completions", json={**body, "stream": True}) as r:
            next(r.iter_lines())
        freed(1)
        with pytest.raises(httpx.ReadTimeout):  # a whole (not streamed) answer: the same
            httpx.post(s.url + "/v1/completions", json=body, timeout=0.5)
        freed(2)


def test_one_failing_sampler_and_one_bad_request_leave_the_batch_alone(model):
    with running({"tiny": model}) as s, httpx.Client(timeout=30) as http:
        slow = {"type": "slow-greedy", "delay": 0.005}
        good = {"model": "tiny", "prompt": "fine", "max_tokens": 30, "sampler": slow, "stream": True}
        with http.stream("POST", s.url + "/v1/completions", json=good) as r:
            lines = r.iter_lines()
            next(lines)
            bad = http.post(s.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "sampler": "explode"})
            assert bad.status_code == 500 and "boom" in bad.json()["error"]["message"]
            assert http.post(s.url + "/v1/completions", json={"model": "tiny", "top_k": 0}).status_code == 400
            rest = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        text = "".join(c["choices"][0]["text"] for c in rest)
        assert text and alone(model, "fine", n=30).texts[0].endswith(text)


def test_an_api_key_is_required_when_set(model, monkeypatch):
    with running({"tiny": model}, api_key="sesame") as s:
        with pytest.raises(openai.AuthenticationError):
            client(s, api_key="wrong").models.list()
        assert httpx.post(s.url + "/v1/completions", json={"model": "tiny", "prompt": "x"}).status_code == 401
        assert client(s, api_key="sesame").completions.create(model="tiny", prompt="x", max_tokens=2).choices
        assert httpx.get(s.url + "/health").status_code == 200  # for load balancers


def malformed(rng: random.Random) -> tuple[str, bytes | str, dict[str, str]]:
    """One bad request: broken JSON, wrong types, out-of-range values, odd headers or paths."""
    path = rng.choice(["/v1/completions", "/v1/chat/completions"])
    good: dict = {"model": "tiny", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    key = rng.choice([*good, "temperature", "top_p", "top_k", "seed", "stop", "stream", "n", "sampler", "extra"])
    value = rng.choice(
        [
            None,
            -1,
            0,
            10**30,
            -(10**30),
            1.5e308,
            "x" * rng.randint(0, 50),
            [],
            {},
            [1] * 3,
            True,
            float("nan"),
            [{"role": "user"}],
            [{"role": 3, "content": []}],
            "\ud800",
            {"type": "nope"},
        ]
    )
    kind = rng.randrange(6)
    if kind == 0:
        body: bytes | str = rng.randbytes(rng.randint(0, 200))
    elif kind == 1:
        body = json.dumps({**good, key: value}, allow_nan=True)[: rng.randint(1, 80)]  # cut short
    elif kind == 2:
        body = "[" * rng.randint(1, 5000)  # deep nesting
    elif kind == 3:
        body = json.dumps(rng.choice([[], "x", 3, None, [good]]))
    else:
        body = json.dumps({k: v for k, v in {**good, key: value}.items() if rng.random() > 0.2}, allow_nan=True)
    headers = rng.choice([{}, {"content-type": "text/plain"}, {"content-type": "application/json; charset=latin-1"}])
    return path, body, headers


def test_a_thousand_malformed_requests_then_a_correct_answer(model):
    rng = random.Random(26)
    counts: dict[int, int] = {}
    with (
        running({"tiny": model}, limits=Limits(max_body_bytes=4096, max_tokens=64)) as s,
        httpx.Client(timeout=10) as http,
    ):
        started = time.monotonic()
        for _ in range(1000):
            path, body, headers = malformed(rng)
            r = http.post(s.url + path, content=body, headers=headers)
            counts[r.status_code] = counts.get(r.status_code, 0) + 1
            assert r.status_code < 500, (body, r.text)  # never a crash
            if r.status_code != 200:
                assert r.json()["error"]["message"]
            assert time.monotonic() - started < 60, "the fuzz test ran past its time"
        assert sum(n for code, n in counts.items() if code >= 400) >= 700, counts
        r = http.post(
            s.url + "/v1/completions", json={"model": "tiny", "prompt": "after", "max_tokens": 9, "temperature": 0}
        )
        assert r.json()["choices"][0]["text"] == alone(model, "after", n=9).texts[0]
        assert s.batchers["tiny"].batch_size == 0 and s.batchers["tiny"].queue_depth == 0


def test_the_readme_client_example_runs(model, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"```python needs-server\n(.*?)```", readme, re.S).group(1)
    with running({"demo": model}) as s:
        exec(compile(snippet.replace("http://127.0.0.1:8000", s.url), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    transcript = "user: Hello\nassistant:"
    assert printed == alone(model, transcript, n=40).texts[0]  # no sampling field: the model's default, greedy


class TemplatedBytes(zoo.ByteTokenizer):
    """Bytes, with a chat template of its own (as a Hugging Face tokenizer_config.json has)."""

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return self.encode(text + ("<|assistant|>" if add_generation_prompt else ""))


def test_chat_uses_the_models_own_template():
    model = tiny_model(seed=6)
    tokenizer = TemplatedBytes()
    zoo.attach(model, zoo.spec_of(model), tokenizer=tokenizer)
    messages = [{"role": "user", "content": "hi"}]
    with running({"templated": model}) as s:
        reply = client(s).chat.completions.create(model="templated", messages=messages, max_tokens=8, temperature=0)
    expected = zoo.generate(model, tokenizer, [zoo.chat_ids(tokenizer, messages)], "greedy", max_new_tokens=8)
    assert reply.choices[0].message.content == expected.texts[0]
    assert reply.usage.prompt_tokens == len("<|user|>hi<|end|><|assistant|>")


def test_updates_that_arrive_together_go_out_as_one_chunk():
    """A client that reads slower than the model writes gets fewer, longer chunks, every token counted."""

    async def read() -> tuple[list[Update], int]:
        stream = Stream(Outbox(asyncio.get_running_loop()))
        for text, token, finish in [("a", 1, None), ("b", 2, None), ("c", 3, "length")]:
            stream.emit(Update(text, token, finish))
        await asyncio.sleep(0)  # one delivery for the three
        return [u async for u in stream.updates()], stream.completion_tokens

    got, tokens = asyncio.run(read())
    assert [(u.text, u.token, u.finish) for u in got] == [("abc", 3, "length")] and tokens == 3


def test_every_update_for_a_closed_event_loop_raises_so_the_batcher_stops_its_row():
    loop = asyncio.new_event_loop()
    outbox, queue = Outbox(loop), asyncio.Queue[Update]()
    loop.close()
    for token in (1, 2):  # the second too: none is queued for a delivery that never comes
        with pytest.raises(RuntimeError):
            outbox.post(queue, Update("x", token))
