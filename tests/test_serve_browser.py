"""The chat page at ``/`` in a real headless browser (Debian's chromium, driven by playwright): a
reply streams in, the stop button stops it (and frees the server's row), and a refusal is shown.
CI installs chromium (.ci/run); without it here the test is skipped, saying so."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from serve_helpers import running, tiny_model

import zoo

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def test_chat_page_streams_stops_and_shows_refusals(browser):
    model = tiny_model(seed=9)
    with running({"tiny": model}, api_key="sesame") as s:
        page = browser.new_page()
        page.goto(s.url + "/")
        page.wait_for_selector("#error:has-text('401')")  # no key yet: the server refuses, the page says so
        page.fill("#key", "sesame")
        page.dispatch_event("#key", "change")
        page.wait_for_selector("#model option[value=tiny]", state="attached")
        assert page.inner_text("#error") == ""

        # a reply streams in, token by token (a slow sampler makes the steps visible)
        page.select_option("#sampler", "named")
        page.fill("#sampler-name", '{"type": "slow-greedy", "delay": 0.02}')
        page.fill("#max_tokens", "12")
        page.fill("#prompt", "hi")
        page.click("#send")
        page.wait_for_selector("#stop:visible")
        page.wait_for_function("document.querySelector('.assistant').textContent.length > 0")
        partial = page.inner_text(".assistant")
        page.wait_for_selector("#send:visible", timeout=20_000)
        expected = zoo.generate(model, zoo.ByteTokenizer(), "user: hi\nassistant:", "greedy", max_new_tokens=12)
        assert page.text_content(".assistant") == expected.texts[0]
        assert len(partial) < len(expected.texts[0])  # it was shown before the reply was complete

        # the stop button ends the reply and the server frees its row
        page.fill("#max_tokens", "400")
        page.fill("#prompt", "and more")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[1].textContent.length > 2")
        page.click("#stop")
        page.wait_for_selector(".assistant[data-stopped=true]")
        stopped = page.text_content(".assistant >> nth=1")
        deadline = time.monotonic() + 10
        while s.batchers["tiny"].batch_size and time.monotonic() < deadline:
            time.sleep(0.02)
        assert s.batchers["tiny"].batch_size == 0
        assert page.text_content(".assistant >> nth=1") == stopped and len(stopped) < 300

        # a request the server refuses: its message is shown
        page.fill("#max_tokens", "100000")
        page.fill("#prompt", "too much")
        page.click("#send")
        page.wait_for_selector("#error:has-text('max_tokens')")
        page.close()
