"""The continuous batcher, driven step by step: a request's tokens equal `zoo.generate`'s for the
same prompt, sampler and seed, whatever else is in the batch and whenever it joined; requests join
between steps; the queue is bounded; a failing sampler or a cancelled request leaves the rest alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_llama
from serve_helpers import TINY, ExplodeSpec, FailSeedSpec, SlowSpec, plugin_config, tiny_model

import zoo
from zoo.lm.generation import resolve_sampler
from zoo.runtime import Runtime
from zoo.serving import cache
from zoo.serving.batcher import Batcher, QueueFull, Request, Update

PROMPTS = ["hello", "a much longer prompt than the others", "x", "the quick brown fox", "zoo"]
SAMPLERS = ["greedy", {"type": "top-k", "k": 20, "temperature": 0.9}, {"type": "sample", "repetition_penalty": 1.3}]


class Collect:
    def __init__(self) -> None:
        self.updates: list[Update] = []

    def __call__(self, update: Update) -> None:
        self.updates.append(update)

    @property
    def tokens(self) -> list[int]:
        return [u.token for u in self.updates if u.token is not None]

    @property
    def text(self) -> str:
        return "".join(u.text for u in self.updates)

    @property
    def finish(self) -> str | None:
        return self.updates[-1].finish if self.updates else None


def run_staggered(model, tokenizer, sampler, *, max_batch: int = 3) -> list[tuple[Collect, int, int]]:
    """Five requests of mixed lengths, joining at different steps (two while others decode, two
    waiting for a free row, which take the slots of finished ones); returns each one's updates,
    budget and seed. The requests share one sampler object, as the server's do: drawn together."""
    runtime = Runtime(device="cpu")
    batcher = Batcher(model, tokenizer, runtime, eos_ids=[], max_batch=max_batch, max_queue=8)
    shared = resolve_sampler(sampler, model)
    out = []
    for i, prompt in enumerate(PROMPTS):
        got, budget, seed = Collect(), 8 + 2 * i, 100 + i
        batcher.submit(Request(tokenizer.encode(prompt), shared, budget, got, seed=seed))
        out.append((got, budget, seed))
        for _ in range(i):  # the next one arrives a few steps later
            batcher.step()
    while batcher.step():
        pass
    return out


def check_against_generate(model, tokenizer, sampler) -> None:
    results = run_staggered(model, tokenizer, sampler)
    for prompt, (got, budget, seed) in zip(PROMPTS, results, strict=True):
        alone = zoo.generate(model, tokenizer, prompt, sampler, max_new_tokens=budget, seed=seed, eos_ids=[])
        assert got.tokens == alone.ids[0], prompt
        assert got.text == alone.texts[0]
        assert got.finish == "length"


@pytest.mark.parametrize("sampler", SAMPLERS, ids=["greedy", "top-k", "penalty"])
def test_minigpt_tokens_equal_generate_whatever_the_batch(sampler):
    model = tiny_model(positions="rope")
    check_against_generate(model, zoo.ByteTokenizer(), sampler)


def test_learned_positions_and_grouped_heads_too():
    model = tiny_model(seed=1, n_heads=4, n_kv_heads=2)
    check_against_generate(model, zoo.ByteTokenizer(), SAMPLERS[1])


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory) -> Path:
    """A tiny random Llama in a local Hugging Face folder; 256 ids, so zoo reads bytes with it."""
    folder = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    tiny_llama(folder)
    return folder


@pytest.mark.parametrize("sampler", SAMPLERS[:2], ids=["greedy", "top-k"])
def test_hugging_face_tokens_equal_generate_whatever_the_batch(hf_llama, sampler):
    model = zoo.open_model(hf_llama)
    Runtime(device="cpu").prepare_for_inference(model)
    check_against_generate(model, zoo.ByteTokenizer(), sampler)


def test_a_recurrent_plugin_model_is_served_one_request_at_a_time():
    model = zoo.build_model("gru-lm-small").eval()
    batcher = Batcher(model, zoo.ByteTokenizer(), Runtime(device="cpu"), max_batch=8)
    assert batcher.max_batch == 1  # its state cannot be split into rows
    check_against_generate(model, zoo.ByteTokenizer(), SAMPLERS[1])


def test_a_request_joins_the_running_batch_between_steps():
    """The newcomer starts at the next step and, being short, leaves long before the long one."""
    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), max_batch=4)
    long, short = Collect(), Collect()
    batcher.submit(Request(tokenizer.encode("a long one"), resolve_sampler("greedy", model), 60, long))
    for _ in range(5):
        batcher.step()
    batcher.submit(Request(tokenizer.encode("short"), resolve_sampler("greedy", model), 4, short))
    batcher.step()
    assert len(short.tokens) == 2 and batcher.batch_size == 2  # prefill + one step together with the long one
    for _ in range(3):
        batcher.step()
    assert short.finish == "length" and long.finish is None
    assert batcher.batch_size == 1 and len(long.tokens) == 10


def test_the_queue_is_bounded():
    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), max_batch=1, max_queue=2)
    greedy = resolve_sampler("greedy", model)
    for _ in range(2):
        batcher.submit(Request([1, 2], greedy, 3, Collect()))
    with pytest.raises(QueueFull):
        batcher.submit(Request([1, 2], greedy, 3, Collect()))
    batcher.step()  # one joins the batch: a place in the queue is free again
    batcher.submit(Request([1, 2], greedy, 3, Collect()))


def test_a_failing_sampler_fails_its_request_alone():
    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), max_batch=4)
    good, bad = Collect(), Collect()
    batcher.submit(Request(tokenizer.encode("fine"), resolve_sampler("greedy", model), 10, good))
    batcher.submit(Request(tokenizer.encode("doomed"), ExplodeSpec(after=3).build(), 10, bad))
    while batcher.step():
        pass
    assert bad.finish == "error" and "boom" in (bad.updates[-1].error or "") and len(bad.tokens) == 2
    alone = zoo.generate(model, tokenizer, "fine", "greedy", max_new_tokens=10, eos_ids=[])
    assert good.tokens == alone.ids[0] and good.finish == "length"


def test_a_sampler_shared_by_requests_fails_only_the_request_it_fails_on():
    """Rows that share a sampler are drawn in one call; when it raises, each is drawn alone."""
    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), max_batch=4)
    shared, good, bad = FailSeedSpec(seed=13).build(), Collect(), Collect()
    batcher.submit(Request(tokenizer.encode("fine"), shared, 10, good, seed=5))
    batcher.submit(Request(tokenizer.encode("doomed"), shared, 10, bad, seed=13))
    while batcher.step():
        pass
    assert bad.finish == "error" and "seed 13" in (bad.updates[-1].error or "") and not bad.tokens
    alone = zoo.generate(model, tokenizer, "fine", "greedy", max_new_tokens=10, seed=5, eos_ids=[])
    assert good.tokens == alone.ids[0] and good.finish == "length"


def test_a_newcomer_takes_the_slot_of_a_finished_row_without_a_rebuild(monkeypatch):
    placed: list[bool] = []
    place = cache.BatchCache.place
    monkeypatch.setattr(cache.BatchCache, "place", lambda self, *a: placed.append(place(self, *a)) or placed[-1])
    check_against_generate(tiny_model(positions="rope"), zoo.ByteTokenizer(), "greedy")
    assert any(placed)  # and the tokens were generate's (checked above)


def test_a_cancelled_request_leaves_at_the_next_step():
    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), max_batch=4)
    stays, goes = Collect(), Collect()
    batcher.submit(Request(tokenizer.encode("stays"), resolve_sampler("greedy", model), 20, stays))
    request = Request(tokenizer.encode("goes"), resolve_sampler("greedy", model), 20, goes)
    batcher.submit(request)
    batcher.step()
    request.cancel()
    batcher.step()
    assert batcher.batch_size == 1 and len(goes.tokens) == 2
    while batcher.step():
        pass
    alone = zoo.generate(model, tokenizer, "stays", "greedy", max_new_tokens=20, eos_ids=[])
    assert stays.tokens == alone.ids[0] and len(goes.tokens) == 2


def test_eos_and_stop_strings_end_a_request_as_generate_does():
    model, tokenizer = tiny_model(seed=3), zoo.ByteTokenizer()
    alone = zoo.generate(model, tokenizer, "hello", "greedy", max_new_tokens=30, eos_ids=[])
    eos, stop = alone.ids[0][5], alone.texts[0][8:10]
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), eos_ids=[eos])
    by_eos, by_stop = Collect(), Collect()
    batcher.submit(Request(tokenizer.encode("hello"), resolve_sampler("greedy", model), 30, by_eos))
    batcher.submit(Request(tokenizer.encode("hello"), resolve_sampler("greedy", model), 30, by_stop, stop=[stop]))
    while batcher.step():
        pass
    expected = zoo.generate(model, tokenizer, "hello", "greedy", max_new_tokens=30, eos_ids=[eos])
    assert by_eos.finish == "eos" and by_eos.text == expected.texts[0]
    cut = zoo.generate(model, tokenizer, "hello", "greedy", max_new_tokens=30, eos_ids=[eos], stop=[stop])
    assert by_stop.finish in ("stop", "eos") and by_stop.text == cut.texts[0]


def test_the_test_samplers_are_registered():
    config = plugin_config()
    assert isinstance(config.spec("samplers", "slow-greedy"), SlowSpec)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_a_row_placed_in_a_finished_slot_computes_what_it_would_alone(positions):
    """The cache itself: rows prefilled together, decoded, one replaced by a newcomer written into
    its slot (left-padded to the batch's length); every row's next logits equal its own sequence
    run alone, so neither the copy nor the padding changes what a row computes."""
    model, runtime = tiny_model(seed=2, positions=positions), Runtime(device="cpu")
    kind = cache.cache_kind(model, runtime)

    def prefill(prompts: list[list[int]]) -> cache.BatchCache:
        longest = max(map(len, prompts))
        ids = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
        fresh = cache.BatchCache(model, runtime, kind)
        fresh.forward(ids, mask)
        return fresh

    def alone(sequence: list[int]) -> torch.Tensor:
        return model(torch.tensor([sequence]))[0][0, -1]

    seqs = [list(range(10, 30)), [40, 41, 42]]
    with torch.inference_mode():
        batch = cache.BatchCache(model, runtime, kind)
        batch.rebuild([], 8, prefill(seqs), [0, 1])
        for step in range(3):  # decode: both rows take a token
            batch.forward(torch.tensor([[50 + step], [60 + step]]), torch.ones(2, 1, dtype=torch.long))
            seqs[0].append(50 + step)
            seqs[1].append(60 + step)
        newcomer = [70, 71, 72, 73]  # row 1 finished: the newcomer takes its slot
        assert batch.place([1], prefill([newcomer]), [0])
        seqs[1] = newcomer
        logits = batch.forward(torch.tensor([[80], [81]]), torch.ones(2, 1, dtype=torch.long))[:, -1]
        for row, token in enumerate((80, 81)):
            torch.testing.assert_close(logits[row], alone([*seqs[row], token]), atol=1e-5, rtol=0)
        assert not batch.place([1], prefill([list(range(100, 140))]), [0])  # longer than the batch: no


def test_finished_rows_are_dropped_before_the_batch_outgrows_the_model():
    """A newcomer left-padded to a long row's length would pass the model's limit with that row's
    columns; once that row finishes, its columns go before the next step (the model never raises)."""
    model, tokenizer = tiny_model(max_seq_len=48), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), eos_ids=[], max_batch=2)
    greedy = resolve_sampler("greedy", model)
    jobs = {"long": ("x" * 40, 8), "short": ("abc", 4), "late": ("xyz", 40)}
    got = {name: Collect() for name in jobs}
    for name in ("long", "short"):
        batcher.submit(Request(tokenizer.encode(jobs[name][0]), greedy, jobs[name][1], got[name]))
    while got["short"].finish is None:
        batcher.step()
    batcher.submit(Request(tokenizer.encode(jobs["late"][0]), greedy, jobs["late"][1], got["late"]))
    while batcher.step():
        pass
    for name, (prompt, budget) in jobs.items():
        alone = zoo.generate(model, tokenizer, prompt, "greedy", max_new_tokens=budget, eos_ids=[])
        assert got[name].finish == "length" and got[name].tokens == alone.ids[0], name


def run_threaded(model, tokenizer, sampler, *, prefill_thread: bool) -> list[tuple[Collect, int, int]]:
    """`run_staggered` on the batcher's own threads: each request is sent once the one before has
    drawn a few tokens, so newcomers are prefilled while the batch decodes and join it mid-run."""
    import threading

    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), eos_ids=[], max_batch=3, prefill_thread=prefill_thread)
    assert batcher.prefill_thread is prefill_thread
    shared = resolve_sampler(sampler, model)
    out, ended = [], threading.Semaphore(0)
    batcher.start()
    try:
        for i, prompt in enumerate(PROMPTS):
            got, budget, seed = Collect(), 8 + 2 * i, 100 + i
            drawn = threading.Event()

            def emit(update: Update, got: Collect = got, drawn: threading.Event = drawn) -> None:
                got(update)
                if len(got.tokens) >= 3 or update.finish:
                    drawn.set()
                if update.finish:
                    ended.release()

            batcher.submit(Request(tokenizer.encode(prompt), shared, budget, emit, seed=seed))
            out.append((got, budget, seed))
            assert drawn.wait(30)
        for _ in PROMPTS:
            assert ended.acquire(timeout=30)
    finally:
        batcher.close(30)
    return out


@pytest.mark.parametrize("prefill_thread", [True, False], ids=["prefill-thread", "one-thread"])
@pytest.mark.parametrize("sampler", SAMPLERS[:2], ids=["greedy", "top-k"])
def test_on_its_own_threads_a_requests_tokens_equal_generate(sampler, prefill_thread, hf_llama):
    for model in (tiny_model(positions="rope"), zoo.open_model(hf_llama)):
        model.eval()
        for prompt, (got, budget, seed) in zip(
            PROMPTS, run_threaded(model, zoo.ByteTokenizer(), sampler, prefill_thread=prefill_thread), strict=True
        ):
            alone = zoo.generate(
                model, zoo.ByteTokenizer(), prompt, sampler, max_new_tokens=budget, seed=seed, eos_ids=[]
            )
            assert got.tokens == alone.ids[0], prompt
            assert got.finish == "length"


def test_a_newcomer_is_prefilled_while_the_batch_decodes():
    """With the prefill thread, a request that arrives during a decoding step gets its first token
    before that step ends (the step here waits until the test has seen that token)."""
    import threading

    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    forward = model.forward
    in_step, release = gated(model)  # its decoding steps wait for `release` (the prompts are longer)
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), eos_ids=[], max_batch=4, prefill_thread=True)
    running, newcomer, sampler = Collect(), Collect(), resolve_sampler("greedy", model)
    batcher.start()
    try:
        batcher.submit(Request(tokenizer.encode("the one running"), sampler, 6, running))
        assert in_step.wait(30)  # its first decoding step has started, and waits
        first = threading.Event()
        batcher.submit(Request(tokenizer.encode("newcomer"), sampler, 4, lambda u: (newcomer(u), first.set())))
        arrived = first.wait(10)
        release.set()
        assert arrived, "the newcomer's first token waited for the running step"
        assert len(running.tokens) == 1  # the step was still running
    finally:
        release.set()
        batcher.close(30)
    model.forward = forward
    for prompt, got, budget in (("the one running", running, 6), ("newcomer", newcomer, 4)):
        assert got.tokens == zoo.generate(model, tokenizer, prompt, "greedy", max_new_tokens=budget, eos_ids=[]).ids[0]


def test_large_models_get_a_prefill_thread_small_ones_one_thread(monkeypatch):
    """By default: a thread for a large model when torch's threads leave a core free, else one."""
    from zoo.serving.batcher import PREFILL_THREAD_PARAMETERS

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    small = tiny_model()
    large = zoo.build_model({**TINY, "vocab_size": 40_000, "d_model": 256, "n_heads": 2})
    assert sum(p.numel() for p in large.parameters()) >= PREFILL_THREAD_PARAMETERS
    runtime = Runtime(device="cpu")
    assert Batcher(small, zoo.ByteTokenizer(), runtime).prefill_thread is False
    assert Batcher(large, zoo.ByteTokenizer(), runtime).prefill_thread is True
    assert Batcher(small, zoo.ByteTokenizer(), runtime, prefill_thread=True).prefill_thread is True
    monkeypatch.setattr(torch, "get_num_threads", lambda: 5)  # torch's threads take every core but three
    assert Batcher(large, zoo.ByteTokenizer(), runtime).prefill_thread is False


def test_the_prefill_thread_keeps_the_batch_within_max_batch():
    """Requests admitted for prefill count against max_batch until they join: at no moment do more
    than max_batch requests hold a row (counted from their updates: first token to last)."""
    import threading

    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    batcher = Batcher(model, tokenizer, Runtime(device="cpu"), eos_ids=[], max_batch=2, prefill_thread=True)
    lock, active, most, ended = threading.Lock(), set(), [0], threading.Semaphore(0)

    def emit_for(i: int):
        def emit(update: Update) -> None:
            with lock:
                active.add(i)
                most[0] = max(most[0], len(active))
                if update.finish:
                    active.discard(i)
                    ended.release()

        return emit

    sampler = resolve_sampler("greedy", model)
    with batcher.paused():  # all eight wait before the first is admitted
        batcher.start()
        for i in range(8):
            batcher.submit(Request(tokenizer.encode(f"request {i}"), sampler, 3 + i % 3, emit_for(i)))
    try:
        for _ in range(8):
            assert ended.acquire(timeout=30)
    finally:
        batcher.close(30)
    assert most[0] == 2


def gated(model):
    """``model`` whose decoding steps (one new token) wait until ``release`` is set; ``in_step``
    tells that one waits."""
    import threading

    forward, in_step, release = model.forward, threading.Event(), threading.Event()

    def slow_decoding(ids, *args, **kwargs):
        if ids.shape[1] == 1 and not release.is_set():
            in_step.set()
            release.wait(30)
        return forward(ids, *args, **kwargs)

    model.forward = slow_decoding
    return in_step, release


@pytest.mark.parametrize("prefill_thread", [True, False], ids=["prefill-thread", "one-thread"])
def test_requests_that_left_the_queue_give_up_their_places_and_close_ends_every_thread(prefill_thread):
    """Two queued requests whose clients went away do not hold the queue's places while the batch
    is full; closing with such a request still queued stops both threads."""
    import time

    model, tokenizer = tiny_model(), zoo.ByteTokenizer()
    in_step, release = gated(model)
    batcher = Batcher(
        model, tokenizer, Runtime(device="cpu"), eos_ids=[], max_batch=1, max_queue=2, prefill_thread=prefill_thread
    )
    prefill = batcher.prefill
    batcher.prefill = lambda: (time.sleep(0.2), prefill())[1]  # type: ignore[method-assign]  # a slow prefill thread
    sampler = resolve_sampler("greedy", model)
    running, gone = Collect(), [Request(tokenizer.encode(f"gone {i}"), sampler, 4, Collect()) for i in range(2)]
    batcher.start()
    try:
        batcher.submit(Request(tokenizer.encode("running"), sampler, 3, running))
        assert in_step.wait(30)  # the one row decodes; the queue fills
        for request in gone:
            batcher.submit(request)
            request.cancel()
        last = Request(tokenizer.encode("last"), sampler, 2, Collect())
        batcher.submit(last)  # not QueueFull: the two cancelled ones made room
        last.cancel()
    finally:
        release.set()
        batcher.close(10)
    assert running.finish == "length"
    assert not any(thread.is_alive() for thread in batcher._threads)


def test_a_model_is_sized_before_int8_quantization_hides_its_linear_weights(monkeypatch):
    import json

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # a core to spare

    from zoo.config import default_config
    from zoo.serving.server import open_models

    spec = {**TINY, "d_model": 512, "n_layers": 4, "n_heads": 8}  # 12.6M parameters, nearly all in Linear layers
    [served] = open_models([json.dumps(spec)], Runtime(device="cpu"), default_config(), quantize="int8")
    assert sum(p.numel() for p in served.model.parameters()) < 1_000_000  # what int8 leaves visible
    assert served.batcher.prefill_thread
