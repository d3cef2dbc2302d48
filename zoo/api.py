"""The Python entry points of the facade that live nowhere else: reading data and listing names.
Building (`zoo.build`), tagging models (`zoo.tags`) and the process's configuration
(`zoo.config.default_config`) sit lower, where every part of zoo can use them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.build import (  # noqa: F401  (the facade's names, for `zoo.api.NAME` users)
    Ref,
    build_model,
    build_sampler,
    build_trainer,
    check_protocol,
    model_spec,
    parameter_estimate,
    resolve,
)
from zoo.config import Config, _cached_config, default_config  # noqa: F401
from zoo.data.sources import open_data
from zoo.specs import Kind
from zoo.tags import attach, source_of, spec_of, tokenizer_of  # noqa: F401


def read_data(
    path: str | Path,
    protocol: str = "classifier",
    *,
    data_format: str | None = None,
    options: Mapping[str, Any] | None = None,
    config: Config | None = None,
) -> Any:
    """Read a data file or folder with the registered data source for it: `zoo.Examples` for
    ``"classifier"``, a list of `zoo.TextSource` for ``"causal-lm"``."""
    registry = (config or default_config()).registry
    return open_data(registry, path, protocol, data_format=data_format, options=options)


def list_names(
    kind: Kind = "models", pattern: str = "*", *, protocol: str | None = None, config: Config | None = None
) -> list[str]:
    """Preset and type names of one kind matching a shell-style ``pattern`` (and ``protocol``)."""
    import fnmatch

    cfg = config or default_config()
    out = []
    for name in cfg.names(kind):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if protocol is not None:
            spec_cls = cfg.spec_class(kind, name)
            if spec_cls is None or spec_cls.protocol != protocol:
                continue
        out.append(name)
    return out


def list_models(pattern: str = "*", *, protocol: str | None = None, config: Config | None = None) -> list[str]:
    """timm-style: ``zoo.list_models("minigpt*", protocol="causal-lm")`` -> preset and type names."""
    return list_names("models", pattern, protocol=protocol, config=config)
