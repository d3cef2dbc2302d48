"""Where a model named by the user lives on disk: hub references and the folders plugins read.

A reference ``SCHEME:NAME`` (``hf:ORG/NAME@REVISION``) is resolved by the plugin that registered
the hub for ``SCHEME`` (`zoo.hookspecs.zoo_register_hubs`) into a local folder, downloaded into
the hub's own cache after the trust checks; from there on it is a folder like any other. A folder
that is not a zoo artifact is read by the one registered model type whose ``from_folder`` claims it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from zoo.errors import ArtifactError
from zoo.registry import SCHEME, Registry
from zoo.specs import ModelSpec

REFERENCE = re.compile(rf"(?P<scheme>{SCHEME.pattern}):(?P<name>[^:/\\\s][^\s]*)")


def reference_scheme(text: str) -> str | None:
    """The ``hf`` of ``hf:ORG/NAME``; None when ``text`` is not shaped like a reference."""
    match = REFERENCE.fullmatch(text)
    return match["scheme"] if match else None


def resolve_reference(target: object, registry: Registry) -> Path | None:
    """The local folder a hub reference stands for (downloaded if needed); None for anything that
    is not a reference, or that names an existing local path."""
    if not isinstance(target, str) or Path(target).expanduser().exists():
        return None
    scheme = reference_scheme(target)
    if scheme is None:
        return None
    hub = registry.hubs.get(scheme)
    if hub is None:
        known = ", ".join(f"{s}:" for s in registry.hubs) or "none"
        hint = " (hf: references need the zoo-hf plugin: pip install zoo-hf)" if scheme == "hf" else ""
        raise ArtifactError(f"{target}: no installed plugin reaches '{scheme}:' references (installed: {known}){hint}")
    return hub.resolve(target[len(scheme) + 1 :])


def hub_source(target: str, folder: Path, registry: Registry) -> dict[str, Any] | None:
    """What the hub of ``target`` records about a folder it gave (pinned reference, file hashes)."""
    hub = registry.hubs.get(reference_scheme(target) or "")
    return hub.describe(folder) if hub is not None and hub.describe is not None else None


def folder_spec(folder: Path, registry: Registry, what: str = "--init-from") -> ModelSpec:
    """The spec of the one registered model type that reads this folder (`ModelSpec.from_folder`)."""
    claims: list[ModelSpec] = []
    for entry in registry.types("models").values():
        if issubclass(entry.spec_cls, ModelSpec):
            claim = entry.spec_cls.from_folder(folder)
            if claim is not None:
                claims.append(claim)
    if not claims:
        raise ArtifactError(
            f"{what} {folder}: not a zoo artifact (no manifest.json), a run folder (no model/), or a "
            "model folder an installed plugin reads (e.g. a Hugging Face folder needs zoo-hf)"
        )
    if len(claims) > 1:
        names = ", ".join(s.type for s in claims)
        raise ArtifactError(f"{what} {folder}: several model types read this folder ({names}); pass --model")
    return claims[0]
