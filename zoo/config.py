"""`registry.toml`: runtime settings, plugin settings and named presets, validated together.

Loading happens in two phases because `[plugins]` decides which plugins load, and the presets
can only be validated once their types are registered.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from zoo.errors import SpecError, UnknownNameError
from zoo.registry import Registry
from zoo.specs import (
    KINDS,
    Kind,
    PluginsSpec,
    RuntimeSpec,
    Spec,
    apply_overrides,
    read_toml,
    validate,
)

REGISTRY_ENV = "ZOO_REGISTRY"
TABLES = ("runtime", "plugins", *KINDS)


@dataclass
class Config:
    """A registry plus the validated contents of one registry file."""

    registry: Registry
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    presets: dict[Kind, dict[str, Spec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    unavailable: dict[tuple[Kind, str], str] = field(default_factory=dict)
    source: str | None = None

    def names(self, kind: Kind) -> list[str]:
        """Preset names and type names of one kind."""
        return sorted(set(self.presets[kind]) | set(self.registry.types(kind)))

    def spec(self, kind: Kind, ref: str | Mapping[str, Any] | Spec) -> Spec:
        """Resolve a preset name, a type name (all defaults), a dict or a spec to a validated spec."""
        if isinstance(ref, Spec):
            if ref.kind != kind:
                raise SpecError([("", f"expected a {kind[:-1]} spec, got a {ref.kind[:-1]} spec")])
            return ref
        if isinstance(ref, Mapping):
            return self.validate_entry(kind, ref, str(ref.get("type", kind)), source=None)
        if ref in self.presets[kind]:
            return self.presets[kind][ref]
        if (kind, ref) in self.unavailable:
            raise SpecError([(f"{kind}.{ref}", self.unavailable[(kind, ref)])], source=self.source)
        if ref in self.registry.known(kind):
            return self.validate_entry(kind, {"type": ref}, ref, source=None)
        raise UnknownNameError(f"{kind[:-1]}", ref, self.names(kind), hint=self.registry.not_loaded_hint())

    def validate_entry(self, kind: Kind, data: Mapping[str, Any], path: str, *, source: str | None = "file") -> Spec:
        """Dispatch on ``type`` to the registered spec class and validate the rest.

        ``path`` prefixes error locations (``models.my-net``); ``source`` names the file.
        """
        source = self.source if source == "file" else source
        if not isinstance(data, Mapping):
            raise SpecError([(path, f"expected a table, got {type(data).__name__}")], source=source)
        type_name = data.get("type")
        if not isinstance(type_name, str):
            known = ", ".join(self.registry.types(kind)) or "(none)"
            raise SpecError([(f"{path}.type", f"missing 'type'; registered {kind} types: {known}")], source=source)
        try:
            entry = self.registry.entry(kind, type_name)
        except UnknownNameError as err:
            raise SpecError([(f"{path}.type", str(err))], source=source) from None
        spec: Spec = validate(entry.spec_cls, dict(data), path, source=source)
        return spec

    def schema(self) -> dict[str, Any]:
        """One JSON Schema for the whole registry file, with every registered type."""
        fields: dict[str, Any] = {
            "runtime": (RuntimeSpec, RuntimeSpec()),
            "plugins": (PluginsSpec, PluginsSpec()),
        }
        for kind in KINDS:
            classes = tuple(e.spec_cls for e in self.registry.types(kind).values())
            item: Any
            if not classes:
                item = dict[str, Any]
            elif len(classes) == 1:
                item = classes[0]
            else:
                item = Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007
            fields[kind] = (dict[str, item], Field(default_factory=dict, description=f"named {kind} presets"))
        model: type[BaseModel] = create_model("ZooRegistryFile", __config__=ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "zoo registry.toml"
        return schema


def find_registry_file(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """An explicit path, else $ZOO_REGISTRY, else ./registry.toml if present, else none."""
    env = os.environ if env is None else env
    if path is not None:
        return Path(path)
    if env.get(REGISTRY_ENV):
        return Path(env[REGISTRY_ENV])
    local = Path("registry.toml")
    return local if local.is_file() else None


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, override and validate a registry file; every problem is reported at once."""
    file = find_registry_file(path, env)
    raw = read_toml(file) if file is not None else {}
    source = str(file) if file is not None else None
    raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, registry=registry, env=env, source=source)


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Config:
    issues: list[tuple[str, str]] = []
    for table in raw:
        if table not in TABLES:
            close = difflib.get_close_matches(table, TABLES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append((table, f"unknown table{hint}; tables: {', '.join(TABLES)}"))
    runtime, plugins = RuntimeSpec(), PluginsSpec()
    for name, cls in (("runtime", RuntimeSpec), ("plugins", PluginsSpec)):
        try:
            value = validate(cls, raw.get(name, {}), name)
        except SpecError as err:
            issues.extend(err.issues)
            continue
        if name == "runtime":
            runtime = value
        else:
            plugins = value
    if registry is None:
        registry = Registry(plugins, env=env)
    config = Config(registry=registry, runtime=runtime, source=source)
    for kind in KINDS:
        table = raw.get(kind, {})
        if not isinstance(table, Mapping):
            issues.append((kind, "expected a table of named entries"))
            continue
        for name, data in table.items():
            path = f"{kind}.{name}"
            type_name = data.get("type") if isinstance(data, Mapping) else None
            if isinstance(type_name, str) and type_name not in registry.known(kind):
                # its plugin may be missing or off here: keep the rest of the file usable, and
                # report this entry when it is used and in `zoo check`
                hint = registry.not_loaded_hint() or "is its plugin installed?"
                unknown = UnknownNameError(f"{kind[:-1]} type", type_name, registry.types(kind), hint=hint)
                config.unavailable[(kind, name)] = f"type {type_name!r} is not available: {unknown}"
                continue
            try:
                config.presets[kind][name] = config.validate_entry(kind, data, path)
            except SpecError as err:
                issues.extend(err.issues)
    if issues:
        raise SpecError(issues, source=source)
    return config
