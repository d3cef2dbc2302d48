"""Where a run starts: trained weights (`--init-from`), not random ones.

The source is a zoo artifact, a run folder (its ``model/``), a local model folder that an
installed model plugin reads (e.g. a Hugging Face folder through zoo-hf's ``from_folder``), or a
LoRA adapter folder in peft's layout (its base, opened the same way, with the adapter merged). The
weights load with the same checks as `zoo.load`; the spec comes from the source unless a model
spec is given, whose tensors must then match (the error lists every mismatch); the tokenizer
comes along; the new run records its parent (path and sha256).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zoo.adapters import ADAPTER_CONFIG, is_adapter, merge_adapter, read_adapter
from zoo.artifacts import MANIFEST_FILE, Manifest, load
from zoo.config import Config, default_config
from zoo.errors import ArtifactError, UnknownNameError, ZooError
from zoo.files import read_model, shorten
from zoo.lm.tokenizers import text_tokenizer
from zoo.model_folders import folder_spec, hub_source, resolve_reference
from zoo.protocols import CausalLM, Tokenizer
from zoo.specs import ModelSpec
from zoo.storage import check_tensors, sha256_file, tensor_info
from zoo.tags import attach, source_of, spec_of, tokenizer_of

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # peft's base_model_name_or_path for a hub model
MAX_ADAPTER_CHAIN = 8  # an adapter whose base is an adapter whose base is ...: deeper is a loop


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


def open_folder(
    path: Path, config: Config, chain: tuple[Path, ...] = (), *, hub: bool = False
) -> tuple[nn.Module, Path]:
    """The model in a zoo artifact, a run folder, a LoRA adapter folder (its base with the adapter
    merged) or a local model folder a plugin reads, and the folder its weights came from.
    ``chain``: the adapter folders that led here (a base naming one of them is a loop); ``hub``:
    the folder came from a hub reference (an adapter there may name only a hub base)."""
    art = artifact_folder(path)
    if art is not None:
        return load(art, config=config), art
    if is_adapter(path):
        return open_adapter(path, config, chain, hub=hub), path
    spec = folder_spec(path, config.registry)
    # the model family attaches the folder's tokenizer (and, for a hub's folder, its provenance)
    return attach(spec.build(), spec), path


def open_model(target: Any, config: Config | None = None) -> nn.Module:
    """A model to use from anything a user names: a zoo artifact, a run folder, a LoRA adapter
    folder in peft's layout, a local model folder an installed plugin reads (e.g. a Hugging Face
    folder), a hub reference (``hf:ORG/NAME[@REVISION]``, fetched into the hub's cache), or a
    preset / type / inline spec (built through the registry, with the weights the spec says: a
    ``path=`` preset loads its folder, others start random)."""
    return _open_target(target, config or default_config(), ())


def _open_target(target: Any, config: Config, chain: tuple[Path, ...]) -> nn.Module:
    folder = resolve_reference(target, config.registry)
    if folder is not None:  # what the hub gave, recorded as where these weights came from
        model = open_folder(folder, config, chain, hub=True)[0]
        return attach(model, spec_of(model), source=hub_source(target, folder, config.registry))
    if isinstance(target, (str, Path)) and not str(target).lstrip().startswith("{"):
        path = _expand(Path(target))
        if _is_dir(path):
            return open_folder(path, config, chain)[0]
        if isinstance(target, Path) or any(sep in str(target) for sep in ("/", "\\")):
            raise ArtifactError(f"{target}: no such artifact, run folder or model folder")
    try:
        named = config.spec("models", target)
    except UnknownNameError as err:
        if not isinstance(target, str):
            raise
        raise ArtifactError(f"{target}: no such folder, and not a model preset or type ({err})") from None
    assert isinstance(named, ModelSpec)
    return attach(named.build(), named)


def open_adapter(folder: Path, config: Config, chain: tuple[Path, ...] = (), *, hub: bool = False) -> nn.Module:
    """The base model an adapter folder names, with the adapter merged into its weights."""
    adapter = read_adapter(folder)
    reference = adapter.config.base_model_name_or_path
    where = folder / ADAPTER_CONFIG
    chain = (*chain, folder.resolve())
    target = adapter_base(reference, folder, hub=hub)
    if (isinstance(target, Path) and target.resolve() in chain) or len(chain) > MAX_ADAPTER_CHAIN:
        raise ArtifactError(
            f"{where}: base_model_name_or_path {shorten(reference, 100)!r} leads back to an adapter already opened "
            f"(or through more than {MAX_ADAPTER_CHAIN} adapters)"
        )
    try:
        base = _open_target(target, config, chain)
    except ZooError as err:
        why = shorten(str(err), 1000)
        raise ArtifactError(f"{where}: its base {shorten(reference, 100)!r} cannot be opened: {why}") from None
    return merge_adapter(base, adapter)


def adapter_base(reference: str | None, folder: Path, *, hub: bool = False) -> str | Path:
    """The target to open as an adapter's base, from its ``base_model_name_or_path``.

    An ``hf:ORG/NAME[@REV]`` reference is returned unchanged and opened like any target
    `open_model` is given: hub references resolve there, so an adapter on a hub base needs nothing
    more here. A local path (zoo writes absolute ones) is a folder relative to the adapter folder
    first, then to the working directory (peft records the path its user typed). A bare
    ``ORG/NAME`` (peft's hub id) is never fetched: zoo reaches the network only for ``hf:``, or for
    an adapter that itself came from the hub (``hub``), whose base is then a hub repo too, never a
    folder on this machine.
    """
    where = folder / ADAPTER_CONFIG
    if not reference:
        raise ArtifactError(f"{where}: base_model_name_or_path is empty; zoo cannot tell which base model it adapts")
    if reference.startswith("hf:"):
        return reference
    if hub:
        if HUB_ID.fullmatch(reference):
            return f"hf:{reference}"
        raise ArtifactError(
            f"{where}: base_model_name_or_path {shorten(reference, 100)!r}: an adapter from the hub must name its "
            "base as a hub repo (ORG/NAME), not a path on this machine"
        )
    path = _expand(Path(reference))
    candidates = [path] if path.is_absolute() else [folder / path, path]
    for candidate in candidates:
        if _is_dir(candidate):
            return candidate
    looked = " or ".join(shorten(str(c), 100) for c in candidates)
    hint = f"; for the Hugging Face hub repo, write 'hf:{reference}' there" if HUB_ID.fullmatch(reference) else ""
    raise ArtifactError(
        f"{where}: base_model_name_or_path {shorten(reference, 100)!r}: no such folder ({looked}){hint}"
    )


def _expand(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # "~someone" with no such user: the name as written
        return path


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for names the OS refuses (too long, a NUL byte) instead of raising."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def starting_point(source: str | Path, config: Config, model: Any = None, tokenizer: Tokenizer | None = None) -> Start:
    """Load ``source`` (a folder, or a hub reference) as the starting weights; with ``model`` (a
    name, dict or spec) train that spec instead, provided every tensor matches in name, shape and
    dtype. The tokenizer is ``tokenizer``, else the source's; a causal LM with neither is refused
    unless its vocabulary is bytes (`text_tokenizer`)."""
    hub_folder = resolve_reference(str(source), config.registry)
    path = hub_folder or Path(source).expanduser()
    if not path.exists():
        raise ArtifactError(f"--init-from {path}: no such file or folder")
    loaded, where = open_folder(path, config, hub=hub_folder is not None)
    tokenizer = tokenizer or tokenizer_of(loaded)
    if tokenizer is None and isinstance(loaded, CausalLM):
        text_tokenizer(loaded, where)  # trained weights need the tokenizer they were trained with
    is_artifact = (where / MANIFEST_FILE).is_file()
    digest = read_model(where / MANIFEST_FILE, Manifest).weights_sha256 if is_artifact else weights_digest(where)
    parent: dict[str, Any] = {"path": str(where.resolve()), "sha256": digest}
    source_info = hub_source(str(source), where, config.registry) if hub_folder is not None else source_of(loaded)
    if source_info is not None:  # from a hub: the pinned reference (what a resume resolves), each file's sha256
        parent = {**parent, **source_info, "path": source_info["reference"]}
    if model is None:
        return Start(attach(loaded, spec_of(loaded), tokenizer=tokenizer), parent)
    target_spec = config.spec("models", model)
    assert isinstance(target_spec, ModelSpec)
    target = attach(target_spec.build(), target_spec, tokenizer=tokenizer)
    state = loaded.state_dict()
    check_tensors(tensor_info(target.state_dict()), tensor_info(state), f"--init-from {where} as --model")
    target.load_state_dict(state, strict=True)
    return Start(target, parent)
