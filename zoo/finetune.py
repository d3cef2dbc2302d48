"""Where a run starts: trained weights (`--init-from`), not random ones.

The source is a zoo artifact, a run folder (its ``model/``) or a local model folder that an
installed model plugin reads (e.g. a Hugging Face folder through zoo-hf's ``from_folder``). The
weights load with the same checks as `zoo.load`; the spec comes from the source unless a model
spec is given, whose tensors must then match (the error lists every mismatch); the tokenizer
comes along; the new run records its parent (path and sha256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zoo.api import attach, default_config, source_of, tokenizer_of
from zoo.artifacts import MANIFEST_FILE, Manifest, check_tensors, load, sha256_file, tensor_info
from zoo.config import Config
from zoo.errors import ArtifactError
from zoo.files import read_model
from zoo.model_folders import folder_spec, resolve_reference
from zoo.specs import ModelSpec


@dataclass
class Start:
    """A model to train, and the parent it came from (recorded in run.json and the manifest)."""

    model: nn.Module
    parent: dict[str, Any]


def artifact_folder(path: Path) -> Path | None:
    """``path`` itself if it is a zoo artifact, its ``model/`` if it is a run folder, else None."""
    for candidate in (path, path / "model"):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    return None


def weights_digest(folder: Path) -> str:
    """sha256 of a folder's weights: the file's own for one file, else of the files' digests."""
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def open_folder(path: Path, config: Config) -> tuple[nn.Module, Path]:
    """The model in a zoo artifact, a run folder or a local model folder a plugin reads, and the
    folder its weights came from."""
    art = artifact_folder(path)
    if art is not None:
        return load(art, config=config), art
    spec = folder_spec(path, config.registry)
    # the model family attaches the folder's tokenizer (and, for a hub's folder, its provenance)
    return attach(spec.build(), spec), path


def open_model(target: Any, config: Config | None = None) -> nn.Module:
    """A model to use from anything a user names: a zoo artifact, a run folder, a local model
    folder an installed plugin reads (e.g. a Hugging Face folder), a hub reference
    (``hf:ORG/NAME[@REVISION]``, fetched into the hub's cache), or a preset / type / inline spec
    (built through the registry, with the weights the spec says: a ``path=`` preset loads its
    folder, others start random)."""
    config = config or default_config()
    folder = resolve_reference(target, config.registry)
    if folder is not None:
        return open_folder(folder, config)[0]
    if isinstance(target, (str, Path)) and not str(target).lstrip().startswith("{"):
        path = Path(target).expanduser()
        if path.is_dir():
            return open_folder(path, config)[0]
        if isinstance(target, Path) or any(sep in str(target) for sep in ("/", "\\")):
            raise ArtifactError(f"{target}: no such artifact, run folder or model folder")
    named = config.spec("models", target)
    assert isinstance(named, ModelSpec)
    return attach(named.build(), named)


def starting_point(source: str | Path, config: Config, model: Any = None) -> Start:
    """Load ``source`` as the starting weights; with ``model`` (a name, dict or spec) train that
    spec instead, provided every tensor matches in name, shape and dtype."""
    path = resolve_reference(str(source), config.registry) or Path(source).expanduser()
    if not path.exists():
        raise ArtifactError(f"--init-from {path}: no such file or folder")
    loaded, where = open_folder(path, config)
    is_artifact = (where / MANIFEST_FILE).is_file()
    digest = read_model(where / MANIFEST_FILE, Manifest).weights_sha256 if is_artifact else weights_digest(where)
    parent: dict[str, Any] = {"path": str(where.resolve()), "sha256": digest}
    hub = source_of(loaded)
    if hub is not None:  # a hub's folder: the pinned reference (what a resume resolves again) and every file's sha256
        parent = {**parent, **hub, "path": hub["reference"]}
    if model is None:
        return Start(loaded, parent)
    target_spec = config.spec("models", model)
    assert isinstance(target_spec, ModelSpec)
    target = attach(target_spec.build(), target_spec, tokenizer=tokenizer_of(loaded))
    state = loaded.state_dict()
    check_tensors(tensor_info(target.state_dict()), tensor_info(state), f"--init-from {where} as --model")
    target.load_state_dict(state, strict=True)
    return Start(target, parent)
