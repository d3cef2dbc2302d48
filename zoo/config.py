"""`registry.toml`: runtime settings, plugin settings and named presets, validated together.

Loading happens in two phases because `[plugins]` decides which plugins load, and the presets
can only be validated once their types are registered.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from zoo.errors import SpecError, UnknownNameError, ZooError
from zoo.files import parse_json, read_text, shorten
from zoo.model_folders import folder_spec, resolve_reference
from zoo.registry import Registry
from zoo.specs import (
    KINDS,
    Kind,
    PluginsSpec,
    RuntimeSpec,
    Spec,
    TrainerSpec,
    apply_overrides,
    parse_override,
    parse_toml,
    toml_file_error,
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
    source: str | None = None  # the top registry file
    origins: dict[tuple[Kind, str], str] = field(default_factory=dict)  # "zoo-minigpt 0.1.0", "file:line"
    descriptions: dict[tuple[Kind, str], str] = field(default_factory=dict)

    def names(self, kind: Kind) -> list[str]:
        """Preset names and type names of one kind."""
        return sorted(set(self.presets[kind]) | set(self.registry.types(kind)))

    def spec_class(self, kind: Kind, name: str) -> type[Spec] | None:
        """The spec class behind a preset or type name (None if unavailable)."""
        if name in self.presets[kind]:
            return type(self.presets[kind][name])
        entry = self.registry.types(kind).get(name)
        return entry.spec_cls if entry is not None else None

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
        folder = resolve_reference(ref, self.registry) if kind == "models" else None
        if folder is not None:  # hf:ORG/NAME: the spec of the folder the hub gave
            return folder_spec(folder, self.registry, ref)
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
        derived = {
            "type": "object",
            "required": ["base"],
            "properties": {"base": {"type": "string", "description": "the preset this entry derives from"}},
            "description": "a preset derived from `base`: only the fields that change",
        }
        for kind in KINDS:
            table = schema["properties"][kind]
            table["additionalProperties"] = {"anyOf": [derived, table.get("additionalProperties", {})]}
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = "zoo registry.toml"
        return schema


USER_FILE = ("zoo", "registry.toml")  # under $XDG_CONFIG_HOME (default ~/.config)
PROJECT_FILE = "registry.toml"


@dataclass(frozen=True)
class Layer:
    """One registry file's contents, and where it came from."""

    source: str
    raw: Mapping[str, Any]
    text: str = ""  # for line numbers in provenance

    def where(self, kind: str, name: str) -> str:
        line = _line_of(self.text, kind, name)
        return f"{self.source}:{line}" if line else self.source


def user_registry_file(env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if env.get("XDG_CONFIG_HOME"):
        base = Path(env["XDG_CONFIG_HOME"])
    elif env.get("HOME"):
        base = Path(env["HOME"]) / ".config"
    else:
        return None
    path = base.joinpath(*USER_FILE)
    # there but not a file (a folder, a FIFO, a dangling link): read, so that it is reported, not skipped
    return path if path.exists() or path.is_symlink() else None


def registry_files(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    """The registry files that apply, lowest layer first: the user's file, the project's
    ``./registry.toml``, then ``path`` (``--registry``) or ``$ZOO_REGISTRY``."""
    env = os.environ if env is None else env
    explicit = Path(path) if path is not None else Path(env[REGISTRY_ENV]) if env.get(REGISTRY_ENV) else None
    project = Path(PROJECT_FILE) if Path(PROJECT_FILE).exists() or Path(PROJECT_FILE).is_symlink() else None
    files: list[Path] = []
    for candidate in (user_registry_file(env), project, explicit):
        if candidate is None:
            continue
        key = candidate.resolve() if candidate.exists() else candidate
        # the same file named twice is one layer, named as given last (--registry's spelling)
        files = [f for f in files if (f.resolve() if f.exists() else f) != key] + [candidate]
    return files


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Plugin presets, then every registry file (`registry_files`), then ``--set`` overrides,
    merged and validated; every problem is reported at once."""

    layers = []
    for file in registry_files(path, env):
        if not file.exists():
            raise SpecError([("", "file not found")], source=str(file))
        text = read_text(file, toml_file_error, limit=4 << 20)
        layers.append(Layer(str(file), parse_toml(text, str(file)), text))
    return config_from_layers(layers, overrides, registry=registry, env=env)


def plugin_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> PluginsSpec:
    """The ``[plugins]`` settings of the registry files alone (which plugins load), merged as
    `config_from_layers` merges them; a file that does not parse counts as empty here (the
    command that reads it reports it)."""

    disable: list[str] = []
    prefer: dict[str, str] = {}
    for file in registry_files(path, env):
        try:
            table = parse_toml(read_text(file, toml_file_error, limit=4 << 20), str(file)).get("plugins", {})
            value = validate(PluginsSpec, table, "plugins")
        except ZooError:
            continue
        disable += [d for d in value.disable if d not in disable]
        prefer.update(value.prefer)
    return PluginsSpec(disable=disable, prefer=prefer)


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Config:
    """A configuration from one registry file's contents (over the plugins' presets)."""
    return config_from_layers([Layer(source or "<dict>", raw)], (), registry=registry, env=env, top=source)


def config_from_layers(
    layers: Sequence[Layer],
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    top: str | None = None,
) -> Config:
    """Merge plugin presets and ``layers`` (lowest first), apply ``overrides``, validate.

    Merge rule: ``[runtime]`` keys and ``[plugins] prefer`` entries of a higher layer replace the
    lower ones; ``[plugins] disable`` lists add up. A named entry of a higher layer replaces the
    entry of that name below it, unless it sets ``base``: then it is the base preset (looked up in
    this layer, else below; ``base`` may name the entry itself to mean "the one below") with its
    fields changed, nested tables merged key by key.
    """
    source = top if top is not None else (layers[-1].source if layers and layers[-1].source != "<dict>" else None)
    issues: list[tuple[str, str]] = []
    paths = {o: parse_override(o)[0] for o in overrides}

    def issue(layer: Layer | None, path: str, message: str) -> None:
        """Problems of the top file keep plain TOML paths; a lower layer's are prefixed with its file."""
        lower = layer is not None and layers and layer is not layers[-1]
        issues.append((f"{layer.source}: {path}" if lower and layer else path, message))

    for override, parts in paths.items():
        if parts[0] not in TABLES:
            issues.append((f"--set {override}", _unknown_table(parts[0])))
    runtime, plugins = _settings(layers, [o for o, parts in paths.items() if parts[0] in SETTINGS], issue, issues)
    if registry is None:
        registry = Registry(plugins, env=env)
    config = Config(registry=registry, runtime=runtime, source=source)
    merged = _merge_presets(layers, config.registry, config, issue)
    _validate_presets(config, merged, {o: parts for o, parts in paths.items() if parts[0] in KINDS}, issue)
    _check_references(config, merged, issue)
    if issues:
        # a value a --set gave is blamed on that --set, not on the file
        issues = [_blame_override(path, message, paths) for path, message in issues]
        from_set = all(path.startswith("--set ") for path, _ in issues)
        raise SpecError(issues, source=None if from_set else source)
    return config


SETTINGS = ("runtime", "plugins")


def _settings(
    layers: Sequence[Layer], overrides: Sequence[str], issue: Any, issues: list[tuple[str, str]]
) -> tuple[RuntimeSpec, PluginsSpec]:
    """``[runtime]`` and ``[plugins]`` over every layer, then their ``--set`` overrides."""
    runtime_raw: dict[str, Any] = {}
    disable: list[str] = []
    prefer: dict[str, str] = {}
    for layer in layers:
        for table in layer.raw:
            if table not in TABLES:
                issue(layer, table, _unknown_table(table))
        for name, cls in (("runtime", RuntimeSpec), ("plugins", PluginsSpec)):
            try:
                value = validate(cls, layer.raw.get(name, {}), name)
            except SpecError as err:
                for path, message in err.issues:
                    issue(layer, path, message)
                continue
            if name == "runtime":
                runtime_raw.update(layer.raw.get(name, {}))
            else:
                disable += [d for d in value.disable if d not in disable]
                prefer.update(value.prefer)
    overridden = apply_overrides({"runtime": runtime_raw, "plugins": {"disable": disable, "prefer": prefer}}, overrides)
    try:
        return validate(RuntimeSpec, overridden["runtime"], "runtime"), validate(
            PluginsSpec, overridden["plugins"], "plugins"
        )
    except SpecError as err:
        if not issues:
            issues.extend(err.issues)
        return RuntimeSpec(), PluginsSpec()


def _validate_presets(config: Config, merged: Merged, overrides: Mapping[str, list[str]], issue: Any) -> None:
    """Each merged entry with its ``--set`` overrides, validated against its type; an entry whose
    type is not loaded, or a plugin's own broken preset, is set aside as unavailable (reported
    when used, by `zoo list` and by `zoo check`) so the rest stays usable."""
    registry = config.registry
    set_entries = {tuple(parts[:2]) for parts in overrides.values()}
    tables = apply_overrides(
        {kind: {name: fields for name, (fields, _, _) in merged[kind].items()} for kind in KINDS}, list(overrides)
    )
    for kind in KINDS:
        for name, (_, origin, home) in merged[kind].items():
            data = tables[kind][name]
            config.origins[(kind, name)] = origin
            type_name = data.get("type") if isinstance(data, Mapping) else None
            if isinstance(type_name, str) and type_name not in registry.known(kind):
                hint = registry.not_loaded_hint() or "is its plugin installed?"
                unknown = UnknownNameError(f"{kind[:-1]} type", type_name, registry.types(kind), hint=hint)
                config.unavailable[(kind, name)] = f"type {type_name!r} is not available: {unknown}"
                continue
            try:
                config.presets[kind][name] = config.validate_entry(kind, data, f"{kind}.{name}", source=None)
            except SpecError as err:
                if home is None and (kind, name) not in set_entries:
                    config.unavailable[(kind, name)] = f"preset from {origin} is invalid: {err}"
                    continue
                for path, message in err.issues:
                    issue(home, path, message)


def _blame_override(path: str, message: str, paths: Mapping[str, Sequence[str]]) -> tuple[str, str]:
    for override, parts in paths.items():
        dotted = ".".join(parts)
        if path == dotted or path.startswith(dotted + "."):
            return f"--set {override}", message
    return path, message


def reference_problems(config: Config, spec: Spec) -> list[tuple[str, str]]:
    """``(field, message)`` for each logger, callback, optimizer or schedule a trainer names that
    does not exist or validate, or that the trainer cannot use (a schedule shorter than its run)."""
    if not isinstance(spec, TrainerSpec):
        return []
    problems = []
    for kind, where, ref in spec.references():
        try:
            spec.check_reference(config.spec(kind, ref))
        except (ZooError, ValueError) as err:  # "optimizer: sgd.betas: unknown field; ..."
            problems.append((where, str(err)))
    return problems


def _check_references(config: Config, merged: Merged, issue: Any) -> None:
    """Each trainer's loggers, callbacks, optimizer and schedule name ones that exist and validate
    (as ``zoo check`` reports)."""
    for name, spec in list(config.presets["trainers"].items()):
        for where, message in reference_problems(config, spec):
            home = merged["trainers"][name][2]
            if home is not None:
                issue(home, f"trainers.{name}.{where}", message)
                continue
            del config.presets["trainers"][name]  # a plugin's preset: the rest stays usable
            config.unavailable[("trainers", name)] = f"{where}: {message}"
            break


def _unknown_table(table: str) -> str:
    close = difflib.get_close_matches(table, TABLES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown table{hint}; tables: {', '.join(TABLES)}"


Merged = dict[Kind, dict[str, tuple[dict[str, Any], str, "Layer | None"]]]


def _merge_presets(layers: Sequence[Layer], registry: Registry, config: Config, issue: Any) -> Merged:
    """Plugin presets, then each layer's named entries on top (see `config_from_layers`)."""
    merged: Merged = {kind: {} for kind in KINDS}
    shipped: dict[tuple[Kind, str], list[Any]] = {}
    for preset in registry.presets:
        shipped.setdefault((preset.kind, preset.name), []).append(preset)
    for (kind, name), entries in shipped.items():
        if len({e.distribution for e in entries}) > 1:
            who = " and ".join(e.origin for e in entries)
            config.unavailable[(kind, name)] = (
                f"preset {name!r} is shipped by {who}; define it in your registry.toml to choose, or disable one"
            )
            continue
        entry = entries[0]
        merged[entry.kind][name] = (entry.fields, entry.origin, None)
        if entry.description:
            config.descriptions[(entry.kind, name)] = entry.description
    for kind in KINDS:
        for name in [n for n, (fields, _, _) in merged[kind].items() if "base" in fields]:
            _derive_shipped(merged[kind], kind, name, (), config)
    for layer in layers:
        for kind in KINDS:
            table = layer.raw.get(kind, {})
            if not isinstance(table, Mapping):
                issue(layer, kind, "expected a table of named entries")
                continue
            step = _TableMerge(layer, kind, table, dict(merged[kind]), config, issue)
            for name in table:
                result = step.resolve(name, ())
                if result is not None:
                    merged[kind][name] = result
                    config.unavailable.pop((kind, name), None)
    return merged


def _derive_shipped(
    presets: dict[str, tuple[dict[str, Any], str, Layer | None]],
    kind: Kind,
    name: str,
    chain: tuple[str, ...],
    config: Config,
) -> bool:
    """A plugin's preset with ``base``: the base preset (any plugin's) with its fields changed;
    one that cannot be derived is unavailable, blamed on the plugin that shipped it."""
    if name not in presets:
        return False
    fields, origin, home = presets[name]
    if "base" not in fields:
        return True
    base = fields["base"]
    if name in chain or not isinstance(base, str) or base == name:
        why = f"its base {base!r} is not a preset name" if not isinstance(base, str) else "derives from itself"
        config.unavailable[(kind, name)] = f"preset from {origin}: {why} ({' -> '.join((*chain, name))})"
        presets.pop(name)
        return False
    if not _derive_shipped(presets, kind, base, (*chain, name), config):
        if (kind, name) not in config.unavailable:
            config.unavailable[(kind, name)] = f"preset from {origin}: its base {base!r} is not a {kind[:-1]} preset"
        presets.pop(name, None)
        return False
    parent = presets[base]
    rest = {k: v for k, v in fields.items() if k != "base"}
    presets[name] = (_deep_merge(parent[0], rest), f"{origin} (base {base} from {parent[1]})", home)
    return True


MAX_BASES = 64  # presets derived from presets, at most this deep


class _TableMerge:
    """One layer's table of one kind, merged over the entries below it (``base`` resolved)."""

    def __init__(self, layer: Layer, kind: Kind, table: Mapping[str, Any], below: Any, config: Config, issue: Any):
        self.layer, self.kind, self.table, self.below = layer, kind, table, below
        self.config, self.issue = config, issue
        self.done: dict[str, Any] = {}

    def resolve(self, name: str, chain: tuple[str, ...]) -> Any:
        if name not in self.done:  # failures too (None): each entry is derived, or reported, once
            self.done[name] = self._derive(name, chain)
        return self.done[name]

    def _derive(self, name: str, chain: tuple[str, ...]) -> Any:
        kind, layer, data = self.kind, self.layer, self.table[name]
        where = layer.where(kind, name)
        if not isinstance(data, Mapping) or "base" not in data:
            return (dict(data) if isinstance(data, Mapping) else data, where, layer)
        base, rest = data["base"], {k: v for k, v in data.items() if k != "base"}
        if not isinstance(base, str):
            self.issue(layer, f"{kind}.{name}.base", "must be the name of a preset")
            return None
        if len(chain) >= MAX_BASES:  # a chain a file can make as long as it likes: no recursion past this
            self.issue(layer, f"{kind}.{name}.base", f"derives through more than {MAX_BASES} bases ({chain[0]} -> ...)")
            return None
        if base in chain:
            cycle = (*chain[chain.index(base) :], name, base)  # the real cycle: a -> b -> a
            self.issue(layer, f"{kind}.{name}.base", f"derives from itself: {' -> '.join(cycle)}")
            return None
        local = base != name and base in self.table
        parent = self.resolve(base, (*chain, name)) if local else self.below.get(base)
        if parent is None:
            # like an unknown type: its plugin may be missing here; reported when used, listed,
            # and by `zoo check`, while the rest of the file stays usable
            if (kind, base) in self.config.unavailable or local:  # there, but it failed (reported)
                why = f"its base {base!r} is unavailable"
            else:
                close = difflib.get_close_matches(base, [*self.below, *self.table], n=2)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                off = self.config.registry.not_loaded_hint()
                why = f"base {base!r} is not a {kind[:-1]} preset here{hint}" + (f" ({off})" if off else "")
            self.config.unavailable[(kind, name)] = f"{where}: {why}"
            return None
        fields = _deep_merge(parent[0], rest) if isinstance(parent[0], Mapping) else rest
        return (fields, f"{where} (base {base} from {parent[1]})", layer)


def _deep_merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``; tables (dicts) merge key by key, anything else is replaced, and so is
    a nested table that names another ``type`` than the one below (an sgd optimizer over an adamw
    one keeps none of adamw's fields)."""
    out = dict(low)
    for key, value in high.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping) and not _other_type(below, value):
            out[key] = _deep_merge(below, value)
        else:
            out[key] = value
    return out


def _other_type(low: Mapping[str, Any], high: Mapping[str, Any]) -> bool:
    """Whether ``high`` names a type other than ``low``'s; ``name`` counts as ``type`` beside a
    ``type`` (an optimizer or schedule table as written before they were plugin kinds)."""
    if "type" not in low and "type" not in high:
        return False
    below = low.get("type", low.get("name"))
    return below != high.get("type", high.get("name", below))


def _line_of(text: str, kind: str, name: str) -> int:
    """The line that opens ``[kind.name]`` (or ``name = {`` inside ``[kind]``), for provenance."""
    if not text:
        return 0
    quoted = rf'(?:{re.escape(name)}|"{re.escape(name)}"|\'{re.escape(name)}\')'
    header = re.compile(rf"^[ \t]*\[[ \t]*{kind}[ \t]*\.[ \t]*{quoted}[ \t]*\]", re.M)
    match = header.search(text) or re.compile(rf"^[ \t]*{quoted}[ \t]*=", re.M).search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def spec_ref(text: str) -> str | dict[str, Any]:
    """A command-line spec argument: a preset or type name, or an inline JSON spec such as
    '{"type": "minigpt", "d_model": 64}' (for `zoo.build_model`, `zoo.train`, ...)."""

    if not text.lstrip().startswith("{"):
        return text
    value = parse_json(text, f"inline spec {shorten(text, 80)}", ZooError)
    if not isinstance(value, dict):
        raise ZooError(f"inline spec {shorten(text, 80)} must be a JSON object")
    return value


def config_from_args(args: Any, runtime_flags: Sequence[str] = ()) -> Config:
    """The configuration a command runs with: its ``--registry`` file and ``--set`` overrides, and
    the ``runtime`` fields its own flags set (``--device cpu`` -> ``runtime.device="cpu"``)."""
    overrides = list(args.set or ())
    for flag in runtime_flags:
        if getattr(args, flag) is not None:
            overrides.append(f"runtime.{flag}={json.dumps(getattr(args, flag))}")
    return load_config(args.registry, overrides)


def default_config() -> Config:
    """The configuration of this process: the installed plugins and their presets, then the
    user's, the project's and ``$ZOO_REGISTRY``'s registry files (see `zoo.config.registry_files`).

    Cached per set of files and their modification times, so repeated calls are cheap and edits
    are seen.
    """
    files = tuple((str(f.resolve()), f.stat().st_mtime_ns if f.exists() else 0) for f in registry_files())
    switches = (os.environ.get("ZOO_DISABLE_PLUGINS", ""), os.environ.get("ZOO_ENABLE_PLUGINS", ""))
    return _cached_config(files, switches, os.getcwd())


@functools.lru_cache(maxsize=4)
def _cached_config(files: tuple[tuple[str, int], ...], switches: tuple[str, str], cwd: str) -> Config:
    return load_config()
