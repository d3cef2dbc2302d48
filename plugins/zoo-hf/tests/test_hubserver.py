"""The real huggingface_hub client against the test hub of hubserver.py (127.0.0.1, nothing else reached).

What the installed client (huggingface_hub 2.4.0, httpx2) raises, as these tests pin down:

- repo not found: ``RepositoryNotFoundError`` (an ``HfHubHTTPError``), from hf_hub_download, snapshot_download and
  model_info alike.
- revision not found: ``RevisionNotFoundError`` (an ``HfHubHTTPError``).
- file not found: ``RemoteEntryNotFoundError`` (an ``HfHubHTTPError`` and an ``EntryNotFoundError``).
- server down (connection refused), nothing cached: ``LocalEntryNotFoundError`` (a ``FileNotFoundError`` and an
  ``EntryNotFoundError``) from hf_hub_download / snapshot_download, its ``__cause__`` an ``httpx2.ConnectError``;
  ``HfApi.model_info`` raises the bare ``httpx2.ConnectError``. With the files cached, both download functions
  return the cached path instead (no error). Before giving up the client retries the HEAD 5 times with backoff
  (1, 2, 4, 8, 8 s: ~23 s per file; the ``hub`` fixture removes the waits, see ``no_retry_waits``).
- 5xx on the metadata HEAD: retried the same way (a single 503 is invisible); with the file cached, the cache is
  used; else ``LocalEntryNotFoundError`` whose ``__cause__`` is the ``HfHubHTTPError``.
- 500 mid-file (the body breaks off, the resumed GET gets 500): ``HfHubHTTPError`` with
  ``.response.status_code == 500``; no retry on the 500, nothing left in the cache (the client writes to a
  per-process ``<etag>.<random>.incomplete`` file and deletes it on failure, so a later call starts from 0).
- a dropped connection mid-file is NOT an error: http_get retries (after sleeping 1 s) with ``Range: bytes=N-``
  up to 5 times in a row without progress, within the same call.
- offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) with a file not cached: ``LocalEntryNotFoundError``;
  a cached snapshot missing some of the requested files: ``IncompleteSnapshotError`` (a ``LocalEntryNotFoundError``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from hubserver import Hub, git_blob_sha1, offline, sha256
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "org/tiny"
WEIGHTS = os.urandom(200_000)
FILES = {
    "config.json": b'{"model_type": "gpt2", "n_layer": 2}',
    "tokenizer.json": b'{"version": "1.0"}',
    "README.md": b"# tiny\n",
    "model.safetensors": WEIGHTS,
    "extra/notes.txt": b"notes\n" * 100,
}


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def files_in(folder: str | Path) -> dict[str, bytes]:
    root = Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_snapshot_download_allow_patterns_then_offline_from_cache(hub: Hub, tmp_path: Path, monkeypatch) -> None:
    sha = hub.add_repo(REPO, FILES)
    folder = snapshot_download(REPO, allow_patterns=["*.json"])
    assert Path(folder) == cache_dir() / "models--org--tiny" / "snapshots" / sha
    assert str(folder).startswith(str(tmp_path / "hf_home" / "hub"))
    assert files_in(folder) == {"config.json": FILES["config.json"], "tokenizer.json": FILES["tokenizer.json"]}
    assert not hub.requested("*.safetensors", method=None)  # not even a HEAD
    assert (cache_dir() / "models--org--tiny" / "refs" / "main").read_text() == sha
    blobs = cache_dir() / "models--org--tiny" / "blobs"
    assert (blobs / git_blob_sha1(FILES["config.json"])).read_bytes() == FILES["config.json"]

    full = snapshot_download(REPO)
    assert full == folder
    assert files_in(full) == FILES
    assert (blobs / sha256(WEIGHTS)).read_bytes() == WEIGHTS  # LFS blobs are named by their sha256
    assert [r.status for r in hub.requested("*.safetensors")] == [200]
    assert hub.requested("*.safetensors")[0].path == f"/_cdn/{sha256(WEIGHTS)}/model.safetensors"

    hub.stop()
    # server down, still "online": the client falls back to the cache
    assert snapshot_download(REPO) == folder
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    assert snapshot_download(REPO, local_files_only=True) == folder
    offline(monkeypatch)
    n = len(hub.requests)
    assert snapshot_download(REPO, allow_patterns=["*.json"]) == folder
    assert snapshot_download(REPO, revision=sha) == folder
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == FILES["config.json"]
    assert len(hub.requests) == n


def test_second_download_makes_no_file_requests(hub: Hub) -> None:
    hub.add_repo(REPO, FILES)
    folder = snapshot_download(REPO)
    before = len(hub.requests)
    assert snapshot_download(REPO) == folder
    # the branch is resolved again (model_info); the tree listing and the files come from the cache
    assert [(r.method, r.path) for r in hub.requests[before:]] == [("GET", f"/api/models/{REPO}/revision/main")]


def test_pinning_a_sha_gives_the_older_files(hub: Hub) -> None:
    old = hub.add_repo(REPO, FILES)
    new_weights = os.urandom(50_000)
    new = hub.add_commit(REPO, {**FILES, "model.safetensors": new_weights, "config.json": b'{"v": 2}'})
    assert old != new and len(new) == 40
    assert hub.head(REPO) == new
    old_folder = snapshot_download(REPO, revision=old)
    new_folder = snapshot_download(REPO)
    assert Path(old_folder).name == old and Path(new_folder).name == new
    assert files_in(old_folder) == FILES
    assert Path(new_folder, "model.safetensors").read_bytes() == new_weights
    assert Path(hf_hub_download(REPO, "config.json", revision=old)).read_bytes() == FILES["config.json"]
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b'{"v": 2}'
    hub.set_ref(REPO, "v1", old)
    assert snapshot_download(REPO, revision="v1") == old_folder


def test_model_info_files_metadata(hub: Hub) -> None:
    sha = hub.add_repo(REPO, FILES)
    hub.add_commit(REPO, {"config.json": b"{}"})
    info = HfApi().model_info(REPO, revision=sha, files_metadata=True)
    assert info.id == REPO and info.sha == sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(FILES)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == sha256(WEIGHTS) and weights.lfs.size == len(WEIGHTS)
    assert weights.size == len(WEIGHTS)
    config = siblings["config.json"]
    assert config.lfs is None and config.blob_id == git_blob_sha1(FILES["config.json"])
    assert config.size == len(FILES["config.json"])
    plain = HfApi().model_info(REPO)  # main, no files metadata
    assert plain.sha == hub.head(REPO) and [s.rfilename for s in plain.siblings or []] == ["config.json"]
    assert (plain.siblings or [])[0].size is None


def test_tree_listing_is_paginated(hub: Hub) -> None:
    hub.tree_page_size = 2
    hub.add_repo(REPO, FILES)
    folder = snapshot_download(REPO)
    assert files_in(folder) == FILES
    tree_calls = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_calls) == 3 and "cursor=2" in tree_calls[1].query  # 5 files + 1 folder, 2 a page
    listed = list(HfApi().list_repo_tree(REPO, recursive=True))
    assert sorted(f.path for f in listed) == sorted([*FILES, "extra"])


@pytest.mark.parametrize("name", ["model.safetensors", "extra/notes.txt"], ids=["lfs-via-cdn", "regular"])
def test_dropped_connection_is_resumed_with_range(hub: Hub, name: str, monkeypatch) -> None:
    """The client keeps only whole chunks (constants.DOWNLOAD_CHUNK_SIZE, 10 MiB) of a broken body, then resumes
    from there with ``Range: bytes=N-``; made 64 bytes here so that a small file shows the Range."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64)
    hub.add_repo(REPO, FILES)
    hub.fail_file(REPO, name, after_bytes=256)
    path = hf_hub_download(REPO, name)
    assert Path(path).read_bytes() == FILES[name]
    gets = hub.requested(name)
    assert [(r.range, r.status) for r in gets] == [(None, 599), ("bytes=256-", 206)]


def test_dropped_connection_within_the_first_chunk_starts_over(hub: Hub) -> None:
    """With the default 10 MiB chunk, bytes received before the drop are not kept: the retry asks for all of it."""
    hub.add_repo(REPO, FILES)
    hub.fail_file(REPO, "model.safetensors", after_bytes=100_000)
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    assert [(r.range, r.status) for r in hub.requested("model.safetensors")] == [(None, 599), (None, 200)]


def test_500_mid_file_raises_and_leaves_no_partial_blob(hub: Hub, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 100)
    hub.add_repo(REPO, FILES)
    hub.fail_file(REPO, "model.safetensors", after_bytes=1000)
    hub.fail_file(REPO, "model.safetensors", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(REPO, "model.safetensors")
    assert err.value.response.status_code == 500
    assert [(r.range, r.status) for r in hub.requested("model.safetensors")] == [(None, 599), ("bytes=1000-", 500)]
    blobs = cache_dir() / "models--org--tiny" / "blobs"
    assert not list(blobs.iterdir())  # no blob, no leftover .incomplete
    # the next call starts over from byte 0 and succeeds
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    assert hub.requested("model.safetensors")[-1].range is None


def test_500_at_once_raises(hub: Hub) -> None:
    hub.add_repo(REPO, FILES)
    hub.fail_file(REPO, "config.json", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        snapshot_download(REPO, allow_patterns=["config.json"])
    assert err.value.response.status_code == 500


def test_errors(hub: Hub, monkeypatch) -> None:
    sha = hub.add_repo(REPO, FILES)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="0" * 40)  # a sha is not resolved first: the tree listing 404s
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(REPO, revision="nope")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")
    # the non-existence is cached per commit
    assert (cache_dir() / "models--org--tiny" / ".no_exist" / sha / "missing.bin").exists()

    snapshot_download(REPO, allow_patterns=["*.json"])
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md", local_files_only=True)
    with pytest.raises(IncompleteSnapshotError):
        snapshot_download(REPO, local_files_only=True)

    hub.stop()
    with pytest.raises(LocalEntryNotFoundError) as down:
        hf_hub_download(REPO, "README.md")
    assert isinstance(down.value.__cause__, httpx2.ConnectError)
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("org/other")
    with pytest.raises(httpx2.ConnectError):
        HfApi().model_info(REPO)

    offline(monkeypatch)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md")
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download("org/other")


def test_restart_on_the_same_port(hub: Hub) -> None:
    hub.add_repo(REPO, FILES)
    port = hub.port
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == FILES["config.json"]
    hub.stop()
    assert not hub.running
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "README.md")
    hub.start()
    assert hub.port == port
    assert Path(hf_hub_download(REPO, "README.md")).read_bytes() == FILES["README.md"]


def test_range_requests_and_headers(hub: Hub) -> None:
    """The raw protocol, as the client relies on it (httpx2, the client's own transport)."""
    sha = hub.add_repo(REPO, FILES)
    with httpx2.Client(base_url=hub.url) as http:
        head = http.head(f"/{REPO}/resolve/main/config.json")
        assert head.status_code == 200
        assert head.headers["X-Repo-Commit"] == sha
        assert head.headers["ETag"] == f'"{git_blob_sha1(FILES["config.json"])}"'
        assert int(head.headers["Content-Length"]) == len(FILES["config.json"])
        lfs = http.head(f"/{REPO}/resolve/{sha}/model.safetensors")
        assert lfs.status_code == 302
        assert lfs.headers["X-Linked-Etag"] == f'"{sha256(WEIGHTS)}"'
        assert int(lfs.headers["X-Linked-Size"]) == len(WEIGHTS)
        assert lfs.headers["Location"].startswith(hub.cdn_url)
        part = http.get(lfs.headers["Location"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == WEIGHTS[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
        assert http.get(lfs.headers["Location"], headers={"Range": "bytes=-5"}).content == WEIGHTS[-5:]
        assert http.get(lfs.headers["Location"], headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416
        missing = http.head(f"/{REPO}/resolve/main/nope.txt")
        assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
        assert not any(k.lower().startswith("x-xet") for k in lfs.headers)


def test_a_subprocess_finds_the_hub_through_the_environment(hub: Hub, tmp_path: Path) -> None:
    """The fixture's env vars are enough for a fresh process (huggingface_hub reads them at import)."""
    sha = hub.add_repo(REPO, FILES)
    code = "import huggingface_hub as h; print(h.snapshot_download('org/tiny', allow_patterns=['*.json']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == tmp_path / "hf_home" / "hub" / "models--org--tiny" / "snapshots" / sha
    assert {r.path for r in hub.requested("*")} == {f"/{REPO}/resolve/{sha}/{n}" for n in FILES if n.endswith(".json")}


def test_transformers_from_pretrained_through_the_hub(hub: Hub, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "saved")
    sha = hub.add_folder("org/gpt2-tiny", tmp_path / "saved")
    model = AutoModelForCausalLM.from_pretrained("org/gpt2-tiny", revision=sha)
    assert model.config.n_embd == 16
    assert [r.status for r in hub.requested("*.safetensors")] == [200]  # fetched from the CDN once


def test_500_on_the_metadata_head(hub: Hub) -> None:
    """Nothing cached: a 5xx on the HEAD is retried (5 times at most); cached: the client uses the cache."""
    hub.add_repo(REPO, FILES)
    hub.fail_file(REPO, "config.json", method="HEAD", status=503)
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == FILES["config.json"]
    assert [r.status for r in hub.requested("config.json", method="HEAD")] == [503, 200]
    hub.fail_file(REPO, "config.json", method="HEAD", status=500, times=10)
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == FILES["config.json"]  # from the cache
    with pytest.raises(LocalEntryNotFoundError) as err:
        hf_hub_download(REPO, "config.json", revision=hub.add_commit(REPO, {"config.json": b"{}"}))
    assert isinstance(err.value.__cause__, HfHubHTTPError)
    assert err.value.__cause__.response.status_code == 500


def test_lfs_served_from_resolve_without_cdn(hub: Hub) -> None:
    hub.cdn_redirect = False
    hub.add_repo(REPO, FILES)
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == WEIGHTS
    assert [r.path for r in hub.requested("*.safetensors")] == [f"/{REPO}/resolve/main/model.safetensors"]
    assert (cache_dir() / "models--org--tiny" / "blobs" / sha256(WEIGHTS)).exists()
