"""`zoo serve` as a real process: SIGTERM stops new connections, lets the request in flight finish,
and the process exits 0; ``ZOO_API_KEY`` in the environment guards the API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import httpx
import warm
from serve_helpers import tiny_model

import zoo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_drains_the_request_in_flight_then_exits_0(tmp_path):
    artifact = tmp_path / "tiny"
    zoo.save(tiny_model(seed=2), artifact)
    port = free_port()
    env = {**os.environ, "ZOO_API_KEY": "sesame", "OMP_NUM_THREADS": "1"}  # one thread: steady on a busy machine
    cmd = ["serve", str(artifact), "--port", str(port), "--log-level", "warning"]
    proc = warm.Process(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer sesame"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.1)
        assert httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x"}).status_code == 401
        body = {"model": "tiny", "prompt": "drain", "max_tokens": 300, "temperature": 0, "stream": True}
        after = []
        with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers, timeout=60) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            try:  # no new connection is taken while draining
                refused = httpx.get(url + "/health", timeout=2).status_code == 503
            except httpx.TransportError:
                refused = True
            after = [line for line in lines if line]
        assert refused
        chunks = [json.loads(line[6:]) for line in [first, *after] if line.startswith("data: {")]
        assert after[-1] == "data: [DONE]" and chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert len(after) > 10  # most of the reply came after the signal
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
