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

from zoo.api import attach, spec_of, tokenizer_of
from zoo.artifacts import MANIFEST_FILE, Manifest, check_tensors, load, sha256_file, tensor_info
from zoo.config import Config
from zoo.errors import ArtifactError
from zoo.files import read_model
from zoo.lm.tokenizers import text_tokenizer
from zoo.protocols import CausalLM, Tokenizer
from zoo.specs import ModelSpec


@dataclass
class Start:
    """A model to train, and the parent it came from (recorded in run.json and the manifest)."""

    model: nn.Module
    parent: dict[str, str]


def artifact_folder(path: Path) -> Path | None:
    """``path`` itself if it is a zoo artifact, its ``model/`` if it is a run folder, else None."""
    for candidate in (path, path / "model"):
        if (candidate / MANIFEST_FILE).is_file():
            return candidate
    return None


def folder_spec(folder: Path, config: Config) -> ModelSpec:
    """The spec of the one registered model type that reads this folder (`ModelSpec.from_folder`)."""
    claims: list[ModelSpec] = []
    for entry in config.registry.types("models").values():
        if issubclass(entry.spec_cls, ModelSpec):
            claim = entry.spec_cls.from_folder(folder)
            if claim is not None:
                claims.append(claim)
    if not claims:
        raise ArtifactError(
            f"--init-from {folder}: not a zoo artifact (no {MANIFEST_FILE}), a run folder (no model/), or a "
            "model folder an installed plugin reads (e.g. a Hugging Face folder needs zoo-hf)"
        )
    if len(claims) > 1:
        names = ", ".join(s.type for s in claims)
        raise ArtifactError(f"--init-from {folder}: several model types read this folder ({names}); pass --model")
    return claims[0]


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
    spec = folder_spec(path, config)
    return attach(spec.build(), spec), path  # the model family attaches the folder's tokenizer


def open_model(target: Any, config: Config) -> nn.Module:
    """A model to use from anything a user names: a zoo artifact, a run folder, a local model
    folder an installed plugin reads (e.g. a Hugging Face folder), or a preset / type / inline
    spec (built through the registry, with the weights the spec says: a ``path=`` preset loads its
    folder, others start random)."""
    if isinstance(target, (str, Path)) and not str(target).lstrip().startswith("{"):
        path = Path(target).expanduser()
        if path.is_dir():
            return open_folder(path, config)[0]
        if isinstance(target, Path) or any(sep in str(target) for sep in ("/", "\\")):
            raise ArtifactError(f"{target}: no such artifact, run folder or model folder")
    named = config.spec("models", target)
    assert isinstance(named, ModelSpec)
    return attach(named.build(), named)


def starting_point(source: str | Path, config: Config, model: Any = None, tokenizer: Tokenizer | None = None) -> Start:
    """Load ``source`` as the starting weights; with ``model`` (a name, dict or spec) train that
    spec instead, provided every tensor matches in name, shape and dtype. The tokenizer is
    ``tokenizer``, else the source's; a causal LM with neither is refused unless its vocabulary
    is bytes (`text_tokenizer`)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise ArtifactError(f"--init-from {path}: no such file or folder")
    loaded, where = open_folder(path, config)
    tokenizer = tokenizer or tokenizer_of(loaded)
    if tokenizer is None and isinstance(loaded, CausalLM):
        text_tokenizer(loaded, where)  # trained weights need the tokenizer they were trained with
    is_artifact = (where / MANIFEST_FILE).is_file()
    digest = read_model(where / MANIFEST_FILE, Manifest).weights_sha256 if is_artifact else weights_digest(where)
    parent = {"path": str(where.resolve()), "sha256": digest}
    if model is None:
        return Start(attach(loaded, spec_of(loaded), tokenizer=tokenizer), parent)
    target_spec = config.spec("models", model)
    assert isinstance(target_spec, ModelSpec)
    target = attach(target_spec.build(), target_spec, tokenizer=tokenizer)
    state = loaded.state_dict()
    check_tensors(tensor_info(target.state_dict()), tensor_info(state), f"--init-from {where} as --model")
    target.load_state_dict(state, strict=True)
    return Start(target, parent)
