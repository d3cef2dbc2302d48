"""A small Hugging Face Hub served on 127.0.0.1 by the test itself, for the real ``huggingface_hub`` client.

Written against the installed huggingface_hub 2.4.0 (httpx2 transport). Nothing here reaches the internet.

Usage (the ``hub`` fixture is registered for every test under plugins/zoo-hf/tests by its conftest.py)::

    def test_download(hub):
        sha = hub.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": weights})
        folder = huggingface_hub.snapshot_download("org/tiny", allow_patterns=["*.json"])
        assert not hub.requested("*.safetensors")

The fixture starts a ``Hub`` and points huggingface_hub at it for the one test, restoring everything after:
env vars ``HF_ENDPOINT``, ``HF_HOME`` (= ``tmp_path/"hf_home"``), ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=0``,
``HF_HUB_DISABLE_XET=1``, ``HF_HUB_DISABLE_TELEMETRY=1``, ``HF_HUB_DISABLE_PROGRESS_BARS=1``, no ``HF_TOKEN``
(for subprocesses), AND the matching module globals of ``huggingface_hub.constants`` (``ENDPOINT``,
``HUGGINGFACE_CO_URL_TEMPLATE``, ``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET``, ...):
the client reads the env only once, at import, so setting env vars in an already-running process is not enough.
Both ``ENDPOINT`` and ``HUGGINGFACE_CO_URL_TEMPLATE`` must change together: /resolve URLs are built from the template,
and ``endpoint=`` arguments only take effect on URLs that start with ``constants.ENDPOINT``; patching ENDPOINT alone
sends file downloads to huggingface.co (model_info alone would work). The alternative with no patching at all is
``HF_ENDPOINT`` (and ``HF_HOME``, ``HF_HUB_OFFLINE``) in the env BEFORE ``import huggingface_hub`` - what a
subprocess gets from the fixture. The fixture also removes the client's retry sleeps (``no_retry_waits``: same
retries, no 1-8 s waits; a server that is down otherwise costs ~23 s per missing file).
Use ``offline(monkeypatch)`` to switch the running process to ``HF_HUB_OFFLINE=1`` mid-test.

Content: ``hub.add_repo(repo, {path: bytes})`` -> commit sha (on ``main``); ``hub.add_commit(repo, files)`` a new
commit with exactly that file set, ``main`` moves to it; ``hub.add_folder(repo, dir)`` a commit of a folder (e.g. a
``save_pretrained`` output); ``hub.set_ref(repo, "v1", sha)`` a branch/tag; ``hub.head(repo)`` the ``main`` sha.
Set ``lfs_threshold`` before adding files. ``hub.requests`` logs every request as ``Request(method, path, range,
status, query)`` (599 = connection dropped by a fault); ``hub.requested("*.safetensors")`` the GETs of matching files
(``method=None``: HEADs too).

Endpoints served (``{repo}`` is ``org/name``, ``{rev}`` a branch, tag or full 40-hex commit sha, url-quoted):

- ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}`` (model_info / repo_info):
  ``id``, ``sha``, ``siblings`` ([{rfilename}]; with ``?blobs=true`` also ``size``, ``blobId`` and, for LFS files,
  ``lfs: {sha256, size, pointerSize}``).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=`` (list_repo_tree, used by snapshot_download):
  entries ``{type: file|directory, oid, size, path, lfs: {oid, size, pointerSize}}``, paginated with a
  ``Link: <...&cursor=N>; rel="next"`` header every ``Hub.tree_page_size`` entries.
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit`` (the resolved commit), ``ETag`` (git blob sha1 for
  regular files, sha256 for LFS files), ``Content-Length``, ``Accept-Ranges``. LFS files (``*.safetensors``,
  ``*.bin``, ``*.pt``, ``*.pth``, ``*.onnx``, ``*.gguf`` or anything over ``Hub.lfs_threshold`` bytes) answer
  ``302`` with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and ``Location: http://localhost:PORT/_cdn/...``, a
  different origin, as the real hub redirects to its CDN: the client does not follow it on HEAD and downloads
  from it on GET. ``Hub(cdn_redirect=False)`` serves LFS bodies straight from ``/resolve`` instead (200).
- ``GET /_cdn/{sha256}/{path}?repo={repo}``: the "CDN", content-addressed (``repo`` only keys injected faults).
- Errors as the hub sends them: ``404`` + ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``
  (``EntryNotFound`` carries ``X-Repo-Commit``). ``Range: bytes=N-`` / ``bytes=N-M`` / ``bytes=-N`` -> ``206``
  with ``Content-Range``; an unsatisfiable range -> ``416``. No ``X-Xet-*`` header is ever sent, so the client
  always uses plain HTTP.

Faults: ``hub.fail_file(repo, path, after_bytes=N, times=1)`` sends the headers (full length) and N bytes of the next
GET of that file, then drops the connection; ``status=500`` answers the next GET(s) with that status instead. Faults
queue up in call order, one per GET of the body; ``method="HEAD", status=...`` fails the metadata HEADs instead.
``hub.stop()`` closes the listening socket and every open connection; ``hub.start()`` serves again on the same port.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf", ".h5", ".msgpack", ".ckpt")
POINTER_SIZE = 134  # size of a git-lfs pointer file, as the hub reports it


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: the ETag the hub gives a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the hub answered (or dropped): ``hub.requests`` is a list of these, in arrival order."""

    method: str
    path: str  # unquoted, without the query string
    range: str | None  # the Range header, verbatim
    status: int
    query: str = ""


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str = ""
    sha256s: dict[str, str] = field(default_factory=dict)  # path -> sha256 of the content, hashed once
    oids: dict[str, str] = field(default_factory=dict)  # path -> git object id (of the LFS pointer for LFS files)
    lfs: set[str] = field(default_factory=set)  # paths stored in LFS


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha


@dataclass
class _Fault:
    after_bytes: int | None  # drop the connection after this many body bytes
    status: int | None  # or answer this status


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real hub: the client pools connections
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.hub._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.hub._handle(self, "HEAD")


class Hub:
    """An in-process Hugging Face Hub on 127.0.0.1 (see the module docstring for what it serves)."""

    def __init__(self, *, lfs_threshold: int = 10 * 1024 * 1024, cdn_redirect: bool = True, tree_page_size: int = 1000):
        self.lfs_threshold = lfs_threshold
        self.cdn_redirect = cdn_redirect
        self.tree_page_size = tree_page_size
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self._faults: dict[tuple[str, str, str], list[_Fault]] = {}
        self._blobs: dict[str, bytes] = {}  # sha256 -> content: what the CDN serves
        self._lock = threading.Lock()
        self._counter = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub (``HF_ENDPOINT``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Where LFS bodies are redirected: same port, other host name, so a different origin for the client."""
        return f"http://localhost:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Hub:
        """Serve (again): on the same port as before if it was started once already, else on a free one."""
        if self._server is not None:
            return self
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        if self.cdn_redirect and not _localhost_is_127():
            self.cdn_redirect = False  # no second name for this server: LFS bodies come from /resolve itself
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"hub:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open (keep-alive) connection: the client then gets connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            open_connections = list(server.connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- content ---------------------------------------------------------------------------------------------
    def _new_sha(self, repo_id: str, files: dict[str, bytes]) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        digest = hashlib.sha1(repr((repo_id, n, sorted((k, sha256(v)) for k, v in files.items()))).encode())
        return digest.hexdigest()

    def add_repo(self, repo_id: str, files: dict[str, bytes], revision_sha: str | None = None) -> str:
        """Create ``repo_id`` with one commit of ``files`` on ``main``; returns the commit sha."""
        if repo_id in self.repos:
            raise ValueError(f"repo {repo_id!r} exists already: use add_commit")
        self.repos[repo_id] = Repo(repo_id)
        return self.add_commit(repo_id, files, sha=revision_sha)

    def add_commit(
        self, repo_id: str, files: dict[str, bytes], *, sha: str | None = None, branch: str = "main", message: str = ""
    ) -> str:
        """A new commit whose file set is exactly ``files``; ``branch`` moves to it. Returns its 40-hex sha."""
        repo = self.repos[repo_id]
        sha = sha or self._new_sha(repo_id, files)
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise ValueError(f"a commit sha is 40 lowercase hex digits, not {sha!r}")
        commit = Commit(sha, dict(files), message)
        for path, data in commit.files.items():
            digest = sha256(data)
            commit.sha256s[path] = digest
            if path.endswith(LFS_SUFFIXES) or len(data) > self.lfs_threshold:
                commit.lfs.add(path)
                commit.oids[path] = git_blob_sha1(_pointer(digest, len(data)))
            else:
                commit.oids[path] = git_blob_sha1(data)
            self._blobs[digest] = data
        repo.commits[sha] = commit
        repo.refs[branch] = sha
        return sha

    def add_folder(self, repo_id: str, folder: str | Path, **commit: Any) -> str:
        """A commit of every file under ``folder`` (e.g. a ``save_pretrained`` output), creating the repo if new."""
        root = Path(folder)
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        if repo_id not in self.repos:
            self.repos[repo_id] = Repo(repo_id)
        return self.add_commit(repo_id, files, **commit)

    def set_ref(self, repo_id: str, name: str, sha: str) -> None:
        """Point a branch or tag ``name`` at an existing commit."""
        repo = self.repos[repo_id]
        if sha not in repo.commits:
            raise KeyError(sha)
        repo.refs[name] = sha

    def head(self, repo_id: str, ref: str = "main") -> str:
        return self.repos[repo_id].refs[ref]

    # ---- faults and the request log -------------------------------------------------------------------------
    def fail_file(
        self,
        repo_id: str,
        path: str,
        *,
        after_bytes: int = 0,
        times: int = 1,
        status: int | None = None,
        method: str = "GET",
    ) -> None:
        """The next ``times`` GETs of ``path`` (any revision, /resolve or CDN) fail: the connection drops after
        ``after_bytes`` body bytes (the headers promise the full length), or, with ``status``, the answer is that
        HTTP status. ``method="HEAD"`` (with ``status``) fails the metadata HEAD on /resolve instead."""
        if method not in ("GET", "HEAD") or (method == "HEAD" and status is None):
            raise ValueError("faults are for GET, or for HEAD with a status")
        with self._lock:
            queue = self._faults.setdefault((repo_id, path, method), [])
            queue.extend(_Fault(None if status else after_bytes, status) for _ in range(times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, repo_id: str, path: str, method: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get((repo_id, path, method))
            return queue.pop(0) if queue else None

    def requested(self, pattern: str, method: str | None = "GET") -> list[Request]:
        """The logged requests for a file whose path (or name) matches the glob ``pattern`` (e.g. ``*.safetensors``),
        on /resolve or the CDN; ``method=None`` for any method."""
        out = []
        for r in list(self.requests):
            file = _file_of(r.path)
            if file is None or (method is not None and r.method != method):
                continue
            if fnmatch.fnmatch(file, pattern) or fnmatch.fnmatch(file.rsplit("/", 1)[-1], pattern):
                out.append(r)
        return out

    # ---- HTTP ------------------------------------------------------------------------------------------------
    def _handle(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        status = 500
        try:
            status = self._route(h, method, split.path, query)
        except (BrokenPipeError, ConnectionResetError):
            status = 499
            h.close_connection = True
        finally:
            self.requests.append(Request(method, path, h.headers.get("Range"), status, split.query))

    def _route(self, h: _Handler, method: str, raw_path: str, query: dict[str, str]) -> int:
        parts = [unquote(p) for p in raw_path.split("/")[1:]]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id = f"{parts[2]}/{parts[3]}"
            rest = parts[4:]
            if method != "GET":
                return self._send(h, method, 405, b"")
            if not rest:
                return self._model_info(h, repo_id, "main", query)
            if rest[0] == "revision" and len(rest) == 2:
                return self._model_info(h, repo_id, rest[1], query)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(h, repo_id, rest[1], "/".join(rest[2:]), query)
            return self._send(h, method, 404, b"not found")
        if parts[:1] == ["_cdn"] and len(parts) >= 3:
            return self._cdn(h, method, parts[1], "/".join(parts[2:]), query.get("repo", ""))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(h, method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        return self._send(h, method, 404, b"not found")

    def _lookup(self, h: _Handler, method: str, repo_id: str, rev: str) -> tuple[Repo, Commit] | int:
        repo = self.repos.get(repo_id)
        if repo is None:
            msg = "Repository not found"
            return self._send(h, method, 404, msg.encode(), {"X-Error-Code": "RepoNotFound", "X-Error-Message": msg})
        sha = repo.refs.get(rev, rev)
        commit = repo.commits.get(sha)
        if commit is None:
            msg = f"Invalid rev id: {rev}"
            return self._send(
                h, method, 404, msg.encode(), {"X-Error-Code": "RevisionNotFound", "X-Error-Message": msg}
            )
        return repo, commit

    def _model_info(self, h: _Handler, repo_id: str, rev: str, query: dict[str, str]) -> int:
        found = self._lookup(h, "GET", repo_id, rev)
        if isinstance(found, int):
            return found
        _, commit = found
        blobs = query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for name, data in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": name}
            if blobs:
                sibling["size"] = len(data)
                sibling["blobId"] = commit.oids[name]
                if name in commit.lfs:
                    sibling["lfs"] = {"sha256": commit.sha256s[name], "size": len(data), "pointerSize": POINTER_SIZE}
            siblings.append(sibling)
        body = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": siblings,
        }
        return self._send(h, "GET", 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _tree(self, h: _Handler, repo_id: str, rev: str, folder: str, query: dict[str, str]) -> int:
        found = self._lookup(h, "GET", repo_id, rev)
        if isinstance(found, int):
            return found
        _, commit = found
        recursive = query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for name, data in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :].split("/")
            for depth in range(1, len(rel)):  # the folders on the way
                if not recursive and depth > 1:
                    break
                d = prefix + "/".join(rel[:depth])
                entries.setdefault(d, {"type": "directory", "oid": git_blob_sha1(d.encode()), "size": 0, "path": d})
            if len(rel) > 1 and not recursive:
                continue
            entry: dict[str, Any] = {"type": "file", "oid": commit.oids[name], "size": len(data), "path": name}
            if name in commit.lfs:
                entry["lfs"] = {"oid": commit.sha256s[name], "size": len(data), "pointerSize": POINTER_SIZE}
            entries[name] = entry
        if prefix and not entries:
            msg = f"{folder} does not exist on {rev}"
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": msg}
            return self._send(h, "GET", 404, msg.encode(), headers)
        listing = sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))
        start = int(query.get("cursor", "0"))
        page = listing[start : start + self.tree_page_size]
        headers = {"Content-Type": "application/json"}
        if start + self.tree_page_size < len(listing):
            params = "&".join(f"{k}={quote(v)}" for k, v in query.items() if k != "cursor")
            path = f"/api/models/{repo_id}/tree/{quote(rev, safe='')}" + (f"/{quote(folder)}" if folder else "")
            nxt = f"{self.url}{path}?{params}&cursor={start + self.tree_page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return self._send(h, "GET", 200, json.dumps(page).encode(), headers)

    def _resolve(self, h: _Handler, method: str, repo_id: str, rev: str, path: str) -> int:
        found = self._lookup(h, method, repo_id, rev)
        if isinstance(found, int):
            return found
        _, commit = found
        data = commit.files.get(path)
        if data is None:
            msg = "Entry not found"
            headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": msg, "X-Repo-Commit": commit.sha}
            return self._send(h, method, 404, msg.encode(), headers)
        fault = self._take_fault(repo_id, path, "HEAD") if method == "HEAD" else None
        if fault is not None and fault.status is not None:
            return self._send(h, method, fault.status, b"", {"X-Error-Message": "injected fault"})
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if path in commit.lfs:
            digest = commit.sha256s[path]
            headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
            if self.cdn_redirect:
                headers["Location"] = f"{self.cdn_url}/_cdn/{digest}/{quote(path)}?repo={quote(repo_id)}"
                return self._send(h, method, 302, b"", headers)
        else:
            headers["ETag"] = f'"{commit.oids[path]}"'
        return self._send_file(h, method, repo_id, path, data, headers)

    def _cdn(self, h: _Handler, method: str, digest: str, path: str, repo_id: str) -> int:
        data = self._blobs.get(digest)
        if data is None:
            return self._send(h, method, 404, b"NoSuchKey")
        headers = {"ETag": f'"{digest}"', "Accept-Ranges": "bytes"}
        return self._send_file(h, method, repo_id, path, data, headers)

    def _send_file(
        self, h: _Handler, method: str, repo_id: str, path: str, data: bytes, headers: dict[str, str]
    ) -> int:
        status, body = 200, data
        rng = h.headers.get("Range")
        if rng:
            span = _parse_range(rng, len(data))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(h, method, 416, b"", headers)
            first, last = span
            status, body = 206, data[first : last + 1]
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        if method == "GET":
            fault = self._take_fault(repo_id, path, "GET")
            if fault is not None and fault.status is not None:
                return self._send(h, method, fault.status, b"Internal Error", {"X-Error-Message": "injected fault"})
            if fault is not None and fault.after_bytes is not None:
                self._send_headers(h, status, len(body), headers)
                h.wfile.write(body[: fault.after_bytes])
                h.wfile.flush()
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return 599  # logged as "dropped"
        return self._send(h, method, status, body, headers)

    def _send_headers(self, h: _Handler, status: int, length: int, headers: dict[str, str]) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(length))
        h.end_headers()

    def _send(self, h: _Handler, method: str, status: int, body: bytes, headers: dict[str, str] | None = None) -> int:
        self._send_headers(h, status, len(body), headers or {})
        if method != "HEAD" and body:
            h.wfile.write(body)
        return status


def _pointer(digest: str, size: int) -> bytes:
    """The git-lfs pointer file the hub stores in git for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {size}\n".encode()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=N-``, ``bytes=N-M`` or ``bytes=-N`` -> (first, last) inclusive; None when unsatisfiable."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:
        first, last = max(size - int(m[2]), 0), size - 1
    else:
        first = int(m[1])
        last = min(int(m[2]), size - 1) if m[2] else size - 1
    if first >= size or first > last:
        return None
    return first, last


def _localhost_is_127() -> bool:
    try:
        return any(info[4][0] == "127.0.0.1" for info in socket.getaddrinfo("localhost", 80, socket.AF_INET))
    except OSError:
        return False


def _file_of(path: str) -> str | None:
    """The repo file a logged request path was for (/resolve or /_cdn), else None."""
    parts = path.split("/")[1:]
    if len(parts) >= 5 and parts[2] == "resolve":
        return "/".join(parts[4:])
    if parts[:1] == ["_cdn"] and len(parts) >= 3:
        return "/".join(parts[2:])
    return None


# ---- pointing huggingface_hub at a hub ----------------------------------------------------------------------
def point_hf_at(endpoint: str, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point huggingface_hub (env for subprocesses AND the already-imported constants) at ``endpoint``, with a
    fresh cache under ``hf_home``, online, plain HTTP, no token. monkeypatch undoes all of it after the test."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    hf_home = Path(hf_home)
    cache = str(hf_home / "hub")
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": cache,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    unset = (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HUB_ETAG_TIMEOUT",
    )
    for key in unset:
        monkeypatch.delenv(key, raising=False)
    values = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": cache,
        "HUGGINGFACE_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_PROGRESS_BARS": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
    }
    for key, value in values.items():
        monkeypatch.setattr(constants, key, value, raising=False)
    # Trust the test hub like the real one (redirects from it keep going to it): frozen at import otherwise.
    origin = _http._url_origin(endpoint)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", frozenset({*_http._HUB_ORIGINS, origin}))
    # The progress-bar switch is copied into huggingface_hub.utils.tqdm at import.
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch the running process (and its subprocesses) to ``HF_HUB_OFFLINE=1``."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


class _NoWaitTime:
    """The ``time`` module, less its sleep: stands in for it inside huggingface_hub's retry loops."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the client's retries but not their waits: http_backoff sleeps 1, 2, 4, 8, 8 s (a server that is down
    and nothing cached costs ~23 s per hf_hub_download) and http_get sleeps 1 s before resuming a broken body."""
    for module in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
        monkeypatch.setattr(importlib.import_module(module), "time", _NoWaitTime())


def _close_hf_session() -> None:
    """Drop huggingface_hub's pooled connections (they point at a hub that is going away)."""
    from huggingface_hub.utils import _http

    _http.close_session()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """A running ``Hub`` with huggingface_hub pointed at it and a fresh ``HF_HOME`` (``tmp_path / "hf_home"``),
    the client's retry waits removed (``no_retry_waits``)."""
    _close_hf_session()
    with Hub() as server:
        point_hf_at(server.url, tmp_path / "hf_home", monkeypatch)
        no_retry_waits(monkeypatch)
        try:
            yield server
        finally:
            _close_hf_session()


__all__ = ["Hub", "Request", "git_blob_sha1", "hub", "no_retry_waits", "offline", "point_hf_at", "sha256"]
