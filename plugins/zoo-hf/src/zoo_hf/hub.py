"""``hf:ORG/NAME[@REVISION]``: models from the Hugging Face Hub, through ``huggingface_hub``.

Files land in the hub's standard cache (``HF_HOME``), shared with transformers. The order is what
keeps a refused repo from costing a download: the repo's file list first (one API call), then only
the small JSON files zoo reads to decide (config.json, tokenizer_config.json, ...), checked by the
same rules as a local folder (no ``auto_map``/custom code, an architecture transformers ships,
safetensors weights), and only then the weights and tokenizer, exactly the files zoo needs. Every
file is verified against the hub's hashes (sha256 for large files, the git blob sha1 for small
ones). ``HF_HUB_OFFLINE=1`` or an unreachable hub resolve from the cache alone.

This module imports ``huggingface_hub`` only (never transformers at import time): `cached` serves
``zoo list --cached`` quickly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import zoo
from zoo_hf.folders import FolderError, check_config, remote_code_keys

REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")
REVISION = re.compile(r"[\w][\w./-]{0,199}")
COMMIT = re.compile(r"[0-9a-f]{40}")
# what zoo reads from a model repo, besides the weights (top-level files only)
METADATA = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "model.safetensors.index.json",
    "adapter_config.json",
    "manifest.json",
    "spec.json",
)
TOKENIZER = (
    "tokenizer.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
)
OPENABLE = (("manifest.json", "zoo artifact"), ("adapter_config.json", "adapter"), ("config.json", "model"))
OPENABLE_FILES = tuple(f for f, _ in OPENABLE)
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CHUNK = 1 << 20


class HubError(zoo.ZooError):
    """A reference the hub cannot serve, a repo zoo refuses, or no network and no cached copy."""


def parse(name: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` -> (repo id, revision or None)."""
    repo, at, revision = name.partition("@")
    if not REPO_ID.fullmatch(repo) or ".." in repo:
        raise HubError(f"hf:{zoo.shorten(name, 80)}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION")
    if at and (not REVISION.fullmatch(revision) or ".." in revision):
        raise HubError(f"hf:{zoo.shorten(name, 80)}: the revision after '@' is a branch, tag or commit sha")
    return repo, revision or None


@functools.lru_cache(maxsize=64)
def resolve(name: str) -> Path:
    """The local snapshot folder of ``hf:NAME`` (see the module docstring); the same name resolves
    once per process, so a model and its tokenizer come from one revision."""
    from huggingface_hub import constants

    repo, revision = parse(name)
    if constants.HF_HUB_OFFLINE:
        return from_cache(repo, revision, "HF_HUB_OFFLINE is set")
    if revision is not None and COMMIT.fullmatch(revision):  # a commit never changes: a full cached copy is it
        with contextlib.suppress(HubError):
            folder = from_cache(repo, revision, "")
            if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "manifest.json")):
                return folder
    quiet_unless_terminal()
    try:
        info = _model_info(repo, revision)
    except _Unreachable as err:
        return from_cache(repo, revision, f"the hub at {constants.ENDPOINT} cannot be reached ({err})")
    files = {s.rfilename: s for s in info.siblings or []}
    sha = str(info.sha)
    where = f"hf:{repo}@{sha[:12]}"
    wanted = plan(f"hf:{repo}", files)
    with _hub_errors(repo, sha):
        from huggingface_hub import snapshot_download

        # the JSON files that decide, before any weight; by the name asked for, so that the cache
        # records where that branch or tag pointed (what an offline run resolves it to)
        deciding = [f for f in METADATA if f in files]
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=deciding))
        if folder.name != sha:
            raise HubError(f"hf:{name}: the revision moved while zoo was fetching it; run the command again")
        verify(folder, [files[f] for f in deciding], where)
        check_metadata(folder, where)
        rest = sorted({*wanted, *weight_files(folder, files)} - set(deciding))
        folder = Path(snapshot_download(repo, revision=sha, allow_patterns=rest))
    verify(folder, [files[f] for f in rest], where)
    return folder


def plan(where: str, files: dict[str, Any]) -> list[str]:
    """The metadata and tokenizer files zoo fetches; refuses a repo with no safetensors weights."""
    top = [f for f in files if "/" not in f]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    if not safetensors:
        pickles = [f for f in top if f.endswith(PICKLES)]
        why = f"only pickled weights ({', '.join(sorted(pickles)[:3])})" if pickles else "no *.safetensors weights"
        raise HubError(
            f"{where}: {why}; zoo loads safetensors only (a pickle can run code when loaded), so nothing was "
            "downloaded. Pick a revision or a copy of the model that has model.safetensors."
        )
    if not any(f in files for f in ("config.json", "adapter_config.json", "manifest.json")):
        raise HubError(f"{where}: no config.json (not a transformers model), adapter_config.json or zoo artifact")
    return [f for f in (*METADATA, *TOKENIZER) if f in files]


def weight_files(folder: Path, files: dict[str, Any]) -> list[str]:
    """The weights to fetch: the shards an index lists, else model.safetensors (or the adapter's,
    or the artifact's), else every top-level *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = index_shards(index)
        missing = [s for s in shards if s not in files]
        if missing:
            raise HubError(f"{index}: lists shards the repo does not have ({', '.join(missing[:3])})")
        return shards
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if name in files:
            return [name]
    return sorted(f for f in files if "/" not in f and f.endswith(".safetensors"))


def index_shards(index: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names."""
    data = zoo.read_json(index, HubError)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise HubError(f"{index}: expected a weight_map of tensor names to shard files")
    return sorted(set(weight_map.values()))


def check_metadata(folder: Path, where: str) -> None:
    """The rules a local folder obeys, on the JSON files alone (weights not fetched yet)."""
    if (folder / "manifest.json").is_file() or not (folder / "config.json").is_file():
        config_path = folder / "adapter_config.json"
        if config_path.is_file():  # an adapter: its own config names no code either
            data = zoo.read_json(config_path, HubError)
            if isinstance(data, dict) and remote_code_keys(data):
                raise HubError(f"{where}: adapter_config.json names code to run; zoo never runs a repo's code")
        return
    try:
        check_config(folder)
    except FolderError as err:
        raise HubError(f"{where}: {err}; nothing but its JSON files was downloaded") from None


def verify(folder: Path, siblings: Iterable[Any], where: str) -> None:
    """Each file as the hub describes it: sha256 for LFS files, the git blob sha1 for others."""
    for sibling in siblings:
        path = folder / sibling.rfilename
        lfs = getattr(sibling, "lfs", None)
        expected = getattr(lfs, "sha256", None) if lfs is not None else None
        if expected:
            found = sha256_of(path)
        else:
            expected, found = getattr(sibling, "blob_id", None), git_blob_sha1(path)
        if expected and found != expected:
            raise HubError(
                f"{where}: {sibling.rfilename} in the cache does not match the hub's hash ({found[:12]}... != "
                f"{str(expected)[:12]}...); delete {path.resolve()} and run zoo pull again"
            )


def from_cache(repo: str, revision: str | None, why: str) -> Path:
    """The cached snapshot, when the hub is not asked; one message naming what is missing."""
    from huggingface_hub import constants, try_to_load_from_cache

    where = f"hf:{repo}" + (f"@{revision}" if revision else "")
    # the snapshot a branch, tag or sha points to in the cache (zoo fetches only part of a repo, so
    # snapshot_download(local_files_only=True) would call it incomplete)
    found = (try_to_load_from_cache(repo, marker, revision=revision) for marker in OPENABLE_FILES)
    path = next((p for p in found if isinstance(p, str)), None)
    if path is None:
        raise HubError(
            f"{where}: not in the cache ({constants.HF_HUB_CACHE}) and {why}; run `zoo pull {where}` where the "
            "hub can be reached (or set HF_HOME to the cache that holds it)"
        )
    folder = Path(path).parent
    index = folder / "model.safetensors.index.json"
    missing = [w for w in index_shards(index) if not (folder / w).is_file()] if index.is_file() else []
    if missing or not any(folder.glob("*.safetensors")):
        names = ", ".join(missing[:3]) or "*.safetensors"
        raise HubError(f"{where}: the cached copy {folder} lacks {names}; {why}: run `zoo pull {where}` again")
    return folder


def describe(folder: Path) -> dict[str, Any] | None:
    """Provenance of a hub snapshot folder (``.../models--ORG--NAME/snapshots/SHA``): the pinned
    reference, the revision and each file's sha256; None for any other folder."""
    snapshots = folder.parent
    repo_dir = snapshots.parent
    if snapshots.name != "snapshots" or not repo_dir.name.startswith("models--"):
        return None
    repo = repo_dir.name[len("models--") :].replace("--", "/")
    sha = folder.name
    files = {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    return {"reference": f"hf:{repo}@{sha}", "revision": sha, "files": files}


def file_sha256(path: Path) -> str:
    """sha256 of a cached file: large (LFS) files are stored under their sha256, verified when they
    were downloaded, so that name is read instead of hashing hundreds of MB again."""
    blob = os.path.basename(os.readlink(path)) if path.is_symlink() else ""
    return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git (and the hub) gives a small file: sha1 of ``blob <size>\\0<bytes>``."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def quiet_unless_terminal() -> None:
    """Download progress bars on a terminal; none in logs and pipes."""
    from huggingface_hub.utils import disable_progress_bars

    if not sys.stderr.isatty():
        disable_progress_bars()


class _Unreachable(Exception):
    """No answer from the hub (connection refused, DNS, timeout): the cache may still serve."""


def _model_info(repo: str, revision: str | None) -> Any:
    from huggingface_hub import HfApi

    with _hub_errors(repo, revision):
        try:
            return HfApi().model_info(repo, revision=revision, files_metadata=True)
        except Exception as err:
            if _is_network(err):
                raise _Unreachable(zoo.shorten(str(err) or type(err).__name__, 120)) from None
            raise


def _is_network(err: BaseException) -> bool:
    """A transport failure of the HTTP client huggingface_hub uses (httpx, or httpx2 in 2.x)."""
    transport = any(c.__name__ == "TransportError" and c.__module__.startswith("httpx") for c in type(err).__mro__)
    return transport or isinstance(err, ConnectionError | TimeoutError)


@contextlib.contextmanager
def _hub_errors(repo: str, revision: str | None) -> Iterator[None]:
    """The hub's exceptions as one HubError line each (exit 2)."""
    from huggingface_hub import errors

    where = f"hf:{repo}" + (f"@{revision}" if revision else "")
    try:
        yield
    except (zoo.ZooError, _Unreachable):
        raise
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise HubError(
            f"{where}: no such model repo on the hub (or it is private or gated: log in with `hf auth login`)"
        ) from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{where}: no such revision (a branch, tag or commit sha of the repo)") from None
    except errors.EntryNotFoundError as err:
        raise HubError(f"{where}: a file the repo lists is missing on the hub ({zoo.shorten(str(err), 120)})") from None
    except Exception as err:
        if not (_is_network(err) or isinstance(err, errors.HfHubHTTPError | OSError)):
            raise
        raise HubError(
            f"{where}: the download failed ({type(err).__name__}: {zoo.shorten(str(err), 160)}); "
            "run the command again to resume it"
        ) from None


def cached() -> list[dict[str, Any]]:
    """The cached model snapshots zoo can open (``zoo list --cached``), newest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir()
    except CacheNotFound:
        return []
    rows = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        for rev in repo.revisions:
            folder = Path(rev.snapshot_path)
            kind = next((k for f, k in OPENABLE if (folder / f).is_file()), None)
            if kind is None or not any(folder.glob("*.safetensors")):
                continue
            rows.append(
                {
                    "reference": f"hf:{repo.repo_id}",
                    "revision": rev.commit_hash,
                    "refs": sorted(rev.refs),
                    "kind": kind,
                    "size": rev.size_on_disk,
                    "folder": str(folder),
                    "modified": rev.last_modified,
                }
            )
    return sorted(rows, key=lambda r: -r["modified"])
