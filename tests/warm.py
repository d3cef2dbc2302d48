"""`python -m zoo ...` processes for tests, started warm: forked from a server that has already
imported torch and torch._dynamo, the ~2 s that every `zoo train` process spends before it reads
its arguments. The rest is what the command does from `python -m zoo` on: zoo's own start-up
(its Ctrl-C guard, the argument parsing, the plugins), the command, the exit. A warm process is a
real process: its own pid, stdio, working folder, environment and exit status, signals sent to it
with os.kill, SIGKILL included.

`run` and `Process` take the subset of `subprocess.run` and `subprocess.Popen` the tests use. Where
the environment differs from the server's in what Python or torch read while they import
(PYTHON*, TORCH*, OMP_*, ...), where the server cannot be reached, or with ``cold=True``, they
start a cold process instead. Cold, always: the tests of start-up itself (tests/test_exit_codes.py,
tests/test_outside_repo.py), of several processes (tests/test_distributed.py: torchrun starts
those), and the reference runs that warm runs must equal (tests/test_stop.py, tests/test_crash.py):
warm processes share the server's hash seed, and they have torch._dynamo before the first step.

The server: `python tests/warm.py SOCKET`. For each request it forks a waiter, which forks the
process, sends its pid, waits for it and sends its exit status (negative: the signal that ended it,
as Popen reports it). The server exits when its stdin closes (the test process is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

PIPE, DEVNULL = subprocess.PIPE, subprocess.DEVNULL
# read by Python, torch or the C libraries under it while they import or load: a process whose
# environment differs from the server's here starts cold
IMPORT_TIME = ("PYTHON", "TORCH", "PYTORCH", "CUDA", "LD_", "LANG", "LC_", "TQDM_")
IMPORT_TIME += ("OMP_", "MKL_", "KMP_", "OPENBLAS", "GOTO")  # the BLAS and OpenMP libraries
# set in this test process by libraries as they run, and not read while torch loads: inductor's
# cache folder (set once anything compiles; read when compiling), and the flag for Intel's OpenMP
# (sklearn and inductor set it; this torch loads GNU's)
SET_AT_RUN_TIME = {"TORCHINDUCTOR_CACHE_DIR", "KMP_DUPLICATE_LIB_OK"}
NAME = f"zoo-warm-{os.getpid()}-{os.urandom(4).hex()}"  # an abstract socket (Linux): no file to clean up
ENV = dict(os.environ)  # as this test process started: what the server inherits


# ----------------------------------------------------------------------------- server


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    size, _, body = data.partition(b"\n")
    while len(body) < int(size):
        more = conn.recv(1 << 16)
        if not more:
            raise ConnectionError("the test went away mid-request")
        body += more
    return json.loads(body), fds


def _serve(name: str) -> tuple[dict[str, Any], list[int]]:
    """Accept requests until stdin closes; returns (in the forked process only) what to run."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the waiters
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([listener, sys.stdin], [], [])
        if sys.stdin in ready:  # the test process is gone
            os._exit(0)
        conn, _ = listener.accept()
        if os.fork() != 0:
            conn.close()
            continue
        # the waiter: it never returns (only the process it forks does)
        waiter = os.getpid()
        try:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            request, fds = _receive(conn)
            pid = os.fork()
            if pid == 0:
                conn.close()
                return request, fds
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:  # the test went away
            pass
        finally:
            if os.getpid() == waiter:
                os._exit(0)


def _terminal() -> None:
    """SIGINT as a process started from a terminal has it, whatever the test runner inherited (a
    background job ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """Turn the forked process into `python -m zoo ARGS` started in ``cwd`` with ``env``."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False, newline="\n")  # noqa: SIM115 - as Python opens it (no newline translation)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # found again from this process's TMPDIR
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python sets it up from a terminal
    sys.orig_argv = [sys.executable, "-m", "zoo", *request["args"]]
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = request["cwd"]  # `python -m` puts the working folder first


# ----------------------------------------------------------------------------- client

_server: list[subprocess.Popen[bytes]] = []


def _server_ready() -> bool:
    """Start the server on first use (in this test process's starting environment)."""
    if not _server:
        proc = subprocess.Popen([sys.executable, __file__, NAME], stdin=PIPE, stdout=PIPE, env=ENV, cwd="/")
        atexit.register(proc.kill)
        _server.append(proc)
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready", or nothing if it failed
    return _server[0].poll() is None


def why_cold(env: Mapping[str, str]) -> str | None:
    """Why a process with ``env`` would start cold (None: it starts warm)."""

    def keys(e: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in e.items() if k.startswith(IMPORT_TIME) and k not in SET_AT_RUN_TIME}

    differ = sorted(k for k in keys(env).keys() | keys(ENV).keys() if env.get(k) != ENV.get(k))
    if differ:
        return f"the environment differs from the server's in {', '.join(differ)}"
    return None if _server_ready() else "the warm server is not running"


def command(args: Sequence[str]) -> list[str]:
    """The cold process's command line."""
    return [sys.executable, "-m", "zoo", *args]


class Process:
    """A `python -m zoo ARGS` process, as `subprocess.Popen([sys.executable, "-m", "zoo", *ARGS])`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = False,
        cold: bool = False,
    ) -> None:
        env = dict(os.environ if env is None else env)
        self.args, self.returncode = list(args), None
        self._cold: subprocess.Popen[Any] | None = None
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self.why_cold = "asked for" if cold else why_cold(env)
        self.warm = self.why_cold is None
        if not self.warm:
            self._cold = subprocess.Popen(
                command(self.args), stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, text=text,
                preexec_fn=_terminal,
            )  # fmt: skip
            self.pid = self._cold.pid
            self.stdin, self.stdout, self.stderr = self._cold.stdin, self._cold.stdout, self._cold.stderr
            return
        theirs, ours = [], []
        for target, how in enumerate((stdin, stdout, stderr)):
            if how == PIPE:
                r, w = os.pipe()
                child, mine = (r, w) if target == 0 else (w, r)
                ours.append((target, mine))
            elif how == DEVNULL:
                child = os.open(os.devnull, os.O_RDWR)
            else:  # inherited or a file, as Popen takes them
                child = os.dup(target if how is None else how if isinstance(how, int) else how.fileno())
            theirs.append(child)
        for target, fd in ours:
            stream: IO[Any] = os.fdopen(fd, "wb" if target == 0 else "rb")
            if text:  # as Popen wraps them
                stream = io.TextIOWrapper(stream, write_through=target == 0)  # type: ignore[arg-type]
            setattr(self, ("stdin", "stdout", "stderr")[target], stream)
        request = {"args": self.args, "cwd": os.path.abspath(cwd or os.getcwd()), "env": env}
        body = json.dumps(request).encode()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect("\0" + NAME)
        socket.send_fds(self._conn, [f"{len(body)}\n".encode() + body], theirs)
        for fd in theirs:
            os.close(fd)
        self._reply = self._conn.makefile("r")
        self.pid = int(self._reply.readline())

    def poll(self) -> int | None:
        if self._cold is not None:
            self.returncode = self._cold.poll()
        elif self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self._cold is not None:
            self.returncode = self._cold.wait(timeout)
        elif self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._finish()
        assert self.returncode is not None
        return self.returncode

    def _finish(self) -> None:
        self.returncode = int(self._reply.readline())
        self._reply.close()
        self._conn.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended a moment ago (as Popen)
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        if self._cold is not None:
            out = self._cold.communicate(input, timeout)
            self.returncode = self._cold.returncode
            return out
        results: dict[str, Any] = {}

        def read(name: str) -> None:
            stream = getattr(self, name)
            results[name] = stream.read()
            stream.close()

        readers = [
            threading.Thread(target=read, args=(n,), daemon=True) for n in ("stdout", "stderr") if getattr(self, n)
        ]
        for reader in readers:
            reader.start()
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # it ended before reading all of it (as Popen)
                if input:
                    self.stdin.write(input)
                self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        return results.get("stdout"), results.get("stderr")


def run(
    args: Sequence[str],
    *,
    capture_output: bool = False,
    check: bool = False,
    timeout: float | None = None,
    input: Any = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run([sys.executable, "-m", "zoo", *args], ...)` with a warm process."""
    if capture_output:
        kwargs.update(stdout=PIPE, stderr=PIPE)
    if input is not None:
        kwargs["stdin"] = PIPE
    proc = Process(args, **kwargs)
    try:
        out, err = proc.communicate(input, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    res = subprocess.CompletedProcess(command(args), proc.wait(), out, err)
    if check:
        res.check_returncode()
    return res


if __name__ == "__main__":
    import gc

    gc.disable()  # as zoo's command line imports them (zoo.cli.import_heavy)
    import torch
    import torch._dynamo  # noqa: F401

    gc.enable()
    gc.freeze()
    _become(*_serve(sys.argv[1]))  # the forked process: from here on, `python -m zoo`
    import runpy

    runpy.run_module("zoo", run_name="__main__", alter_sys=True)
