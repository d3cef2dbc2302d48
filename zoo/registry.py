"""Plugin discovery and the table of registered types.

A `Registry` loads every plugin module found in the entry-point group ``zoo`` (and any plugin
object handed to `add_plugin`), calls its hooks, and keeps one `Entry` per registered spec class
with the distribution and version that provided it. A plugin that fails to import, whose hook
raises, or that registers an invalid spec class is recorded as failed and contributes nothing;
the rest of the registry keeps working.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import importlib.metadata as metadata
import os
import re
import signal
import threading
import time
import typing
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError, UnknownNameError
from zoo.specs import BASES, KINDS, Kind, PluginsSpec, Spec

ENTRY_POINT_GROUP = "zoo"
DISABLE_ENV = "ZOO_DISABLE_PLUGINS"
ENABLE_ENV = "ZOO_ENABLE_PLUGINS"  # re-enables, for one run, plugins a registry file disables
TIMEOUT_ENV = "ZOO_PLUGIN_TIMEOUT"  # seconds one plugin may take to import and register (default 10)
HOOKS: dict[str, Kind] = {f"zoo_register_{kind}": kind for kind in KINDS}
PRESET_HOOK = "zoo_register_presets"
DATA_HOOK = "zoo_register_data_sources"
COMMAND_HOOK = "zoo_register_commands"
TOKENIZER_HOOK = "zoo_register_tokenizers"
EXPORTER_HOOK = "zoo_register_exporters"
HUB_HOOK = "zoo_register_hubs"
ALL_HOOKS = (*HOOKS, PRESET_HOOK, DATA_HOOK, COMMAND_HOOK, TOKENIZER_HOOK, EXPORTER_HOOK, HUB_HOOK)
PROTOCOLS = ("classifier", "causal-lm")
SCHEME = re.compile(r"[a-z][a-z0-9-]{1,31}")  # the 'hf' of 'hf:ORG/NAME' (two letters at least: never a drive)


@dataclass(frozen=True)
class Entry:
    """One registered type and where it came from."""

    kind: Kind
    type: str
    spec_cls: builtins.type[Spec]
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PresetEntry:
    """A named spec a plugin ships (raw fields; validated when a configuration is built)."""

    kind: Kind
    name: str
    fields: dict[str, Any]
    description: str
    plugin: str
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class DataSourceEntry:
    """A data format a plugin reads: ``read(path, options)`` gives a dataset of ``protocol``."""

    name: str
    read: Callable[[Path, Mapping[str, Any]], Any]
    protocol: str
    suffixes: tuple[str, ...]
    folder: bool
    description: str
    distribution: str
    version: str


@dataclass(frozen=True)
class CommandEntry:
    """A ``zoo`` subcommand a plugin adds."""

    name: str
    run: Callable[[Any], int]
    help: str
    arguments: Callable[[Any], None] | None
    distribution: str
    version: str


@dataclass(frozen=True)
class TokenizerEntry:
    """A tokenizer kind a plugin restores: ``load(folder, description)``."""

    name: str
    load: Callable[[Path, Mapping[str, Any]], Any]
    distribution: str
    version: str


@dataclass(frozen=True)
class ExporterEntry:
    """A format ``zoo export`` writes: ``export(model, folder, options)``."""

    name: str
    export: Callable[[Any, Path, Mapping[str, Any]], None]
    description: str
    distribution: str
    version: str


@dataclass(frozen=True)
class HubEntry:
    """A model hub a plugin reaches: ``resolve(name)`` turns the ``NAME`` of a ``SCHEME:NAME``
    reference into a local folder; ``cached()`` lists what is already on disk; ``describe(folder)``
    is the provenance recorded for weights from such a folder."""

    scheme: str
    resolve: Callable[[str], Path]
    cached: Callable[[], list[dict[str, Any]]] | None
    describe: Callable[[Path], dict[str, Any] | None] | None
    description: str
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.scheme


@dataclass
class PluginInfo:
    """What `zoo plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    status: Literal["loaded", "disabled", "failed"]
    reason: str = ""
    entries: list[tuple[Kind, str]] = field(default_factory=list)
    presets: list[tuple[Kind, str]] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)  # "data:NAME", "command:NAME"
    module: str = ""  # the hook module an entry point names, e.g. "zoo_minigpt.hooks"


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh pluggy manager knowing zoo's hookspecs (never created at import time)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def normalize(name: str) -> str:
    """Distribution names compare like pip compares them: case- and separator-insensitive."""
    return name.lower().replace("_", "-").replace(".", "-")


def names_from_env(env: Mapping[str, str], key: str) -> set[str]:
    return {normalize(n) for n in env.get(key, "").split(",") if n.strip()}


class PluginStopped(BaseException):
    """A plugin that tried to end the process or ran past its time (a BaseException, so that a
    plugin's own ``except Exception`` does not swallow it)."""


def plugin_timeout(env: Mapping[str, str]) -> float:
    try:
        return max(float(env.get(TIMEOUT_ENV, "10")), 0.1)
    except ValueError:
        raise PluginError(f"${TIMEOUT_ENV}: expected seconds, got {env[TIMEOUT_ENV][:40]!r}") from None


@contextlib.contextmanager
def guarded(seconds: float) -> Iterator[None]:
    """Run a plugin's import or hooks so that it cannot take zoo down: ``os._exit`` raises instead
    of ending the process (``sys.exit`` already raises), and on the main thread a plugin still
    running after ``seconds`` (a sleep, a loop) is interrupted by SIGALRM, again every second if
    it catches that. Code that crashes or hangs inside C is beyond this."""
    real_exit = os._exit

    def exit_(code: int) -> None:
        raise PluginStopped(f"it called os._exit({code}) while loading")

    def stop(signum: int, frame: Any) -> None:
        raise PluginStopped(f"it was still loading after {seconds:g} s (${TIMEOUT_ENV} sets the limit)")

    alarm = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGALRM, stop) if alarm else None
    outer = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0) if alarm else (0.0, 0.0)
    start = time.monotonic()
    os._exit = exit_  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real_exit
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer[0] > 0:  # a timer someone else set (a test's own hang guard) keeps running
                signal.setitimer(signal.ITIMER_REAL, max(outer[0] - (time.monotonic() - start), 0.001), outer[1])


class Registry:
    """The registered model, sampler and trainer types of one process (or one test)."""

    def __init__(
        self,
        plugins: PluginsSpec | None = None,
        *,
        entry_points: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = plugins or PluginsSpec()
        self.pm = make_plugin_manager()
        self.plugins: dict[str, PluginInfo] = {}
        self._candidates: dict[Kind, dict[str, list[Entry]]] = {k: {} for k in KINDS}
        self.presets: list[PresetEntry] = []  # in load order
        self.data_sources: dict[str, DataSourceEntry] = {}
        self.commands: dict[str, CommandEntry] = {}
        self.tokenizers: dict[str, TokenizerEntry] = {}
        self.exporters: dict[str, ExporterEntry] = {}
        self.hubs: dict[str, HubEntry] = {}
        env = os.environ if env is None else env
        configured = {normalize(n) for n in self.settings.disable} - names_from_env(env, ENABLE_ENV)
        self._disabled = configured | names_from_env(env, DISABLE_ENV)
        self._timeout = plugin_timeout(env)
        if entry_points:
            self._load_entry_points()

    # ------------------------------------------------------------------ loading

    def _load_entry_points(self) -> None:
        found = []
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            meta = ep.dist.metadata if ep.dist is not None else None  # parsed on each access: once
            found.append((meta["Name"], meta["Version"], ep) if meta is not None else ("unknown", "0", ep))
        for dist, version, ep in sorted(found, key=lambda f: (f[0], f[2].name)):
            name = f"{dist}:{ep.name}"
            if normalize(dist) in self._disabled or normalize(ep.name) in self._disabled:
                self.plugins[name] = PluginInfo(name, dist, version, "disabled", "disabled by configuration")
                continue
            try:
                with guarded(self._timeout):
                    module = ep.load()
            except BaseException as err:  # a plugin's import must never take zoo down
                if isinstance(err, KeyboardInterrupt):
                    raise
                self._fail(name, dist, version, f"import of {ep.value!r} failed: {_describe(err)}").module = ep.value
                continue
            self.add_plugin(module, name=name, distribution=dist, version=version).module = ep.value

    def add_plugin(
        self,
        plugin: object,
        *,
        name: str | None = None,
        distribution: str | None = None,
        version: str = "0",
    ) -> PluginInfo:
        """Register a plugin object (usually a module) and run its hooks, isolated from others.

        This is how users register their own components from Python, and how tests build
        registries with inline fake plugins.
        """
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        distribution = distribution or name
        if normalize(distribution) in self._disabled or normalize(name) in self._disabled:
            info = PluginInfo(name, distribution, version, "disabled", "disabled by configuration")
            self.plugins[name] = info
            return info
        if name in self.plugins:
            raise PluginError(f"a plugin named {name!r} is already registered")
        staged: list[Entry] = []
        presets: list[PresetEntry] = []
        sources: list[DataSourceEntry] = []
        commands: list[CommandEntry] = []
        tokenizers: list[TokenizerEntry] = []
        exporters: list[ExporterEntry] = []
        hubs: list[HubEntry] = []
        registrars: list[tuple[str, Any]] = [
            *((hook, self._registrar(kind, name, distribution, version, staged)) for hook, kind in HOOKS.items()),
            (PRESET_HOOK, self._preset_registrar(name, distribution, version, presets)),
            (DATA_HOOK, self._source_registrar(distribution, version, sources)),
            (COMMAND_HOOK, self._command_registrar(distribution, version, commands)),
            (TOKENIZER_HOOK, self._tokenizer_registrar(distribution, version, tokenizers)),
            (EXPORTER_HOOK, self._exporter_registrar(distribution, version, exporters)),
            (HUB_HOOK, self._hub_registrar(distribution, version, hubs)),
        ]
        try:
            self._check_hook_names(plugin)
            self.pm.register(plugin, name=name)
            with guarded(self._timeout):
                for hook_name, register in registrars:
                    for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                        if impl.plugin_name == name:
                            impl.function(**{arg: register for arg in impl.argnames})
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return self._fail(name, distribution, version, _describe(err))
        for entry in staged:
            self._candidates[entry.kind].setdefault(entry.type, []).append(entry)
        self.presets.extend(presets)
        self.data_sources.update((s.name, s) for s in sources)
        self.commands.update((c.name, c) for c in commands)
        self.tokenizers.update((t.name, t) for t in tokenizers)
        self.exporters.update((e.name, e) for e in exporters)
        self.hubs.update((h.scheme, h) for h in hubs)
        info = PluginInfo(
            name,
            distribution,
            version,
            "loaded",
            entries=[(e.kind, e.type) for e in staged],
            presets=[(p.kind, p.name) for p in presets],
            extras=[f"data:{s.name}" for s in sources]
            + [f"command:{c.name}" for c in commands]
            + [f"tokenizer:{t.name}" for t in tokenizers]
            + [f"export:{e.name}" for e in exporters]
            + [f"hub:{h.scheme}" for h in hubs],
        )
        self.plugins[name] = info
        return info

    def _check_hook_names(self, plugin: object) -> None:
        for attr in dir(plugin):
            marked = attr.startswith("zoo_") and self.pm.parse_hookimpl_opts(plugin, attr) is not None
            if marked and attr not in ALL_HOOKS:
                close = difflib.get_close_matches(attr, list(ALL_HOOKS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PluginError(f"unknown hook {attr!r}{hint}")

    def _registrar(self, kind: Kind, plugin: str, dist: str, version: str, staged: list[Entry]) -> Any:
        def register(spec_cls: type[Spec]) -> None:
            type_name = spec_type_name(spec_cls, kind)
            for other in staged:
                if other.kind == kind and other.type == type_name:
                    raise PluginError(f"registers {kind[:-1]} type {type_name!r} twice")
            staged.append(Entry(kind, type_name, spec_cls, plugin, dist, version))

        return register

    def _preset_registrar(self, plugin: str, dist: str, version: str, staged: list[PresetEntry]) -> Any:
        def register(kind: str, name: str, fields: dict[str, Any], *, description: str = "") -> None:
            if kind not in KINDS:
                raise PluginError(f"preset {name!r}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
            if not isinstance(name, str) or not name or not isinstance(fields, dict):
                raise PluginError(f"preset {name!r}: register(kind, name, fields) takes a name and a dict")
            if any(p.kind == kind and p.name == name for p in staged):
                raise PluginError(f"registers {kind[:-1]} preset {name!r} twice")
            staged.append(PresetEntry(kind, name, dict(fields), description, plugin, dist, version))

        return register

    def _source_registrar(self, dist: str, version: str, staged: list[DataSourceEntry]) -> Any:
        def register(
            name: str,
            read: Callable[[Path, Mapping[str, Any]], Any],
            *,
            protocol: str,
            suffixes: Iterable[str] = (),
            folder: bool = False,
            description: str = "",
        ) -> None:
            what = f"data source {name!r}"
            if not isinstance(name, str) or not name or not callable(read):
                raise PluginError(f"{what}: register(name, read, protocol=...) takes a name and a callable")
            if protocol not in PROTOCOLS:
                raise PluginError(f"{what}: protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
            ends = tuple(suffixes)
            if any(not isinstance(e, str) or not (e == "*" or e.startswith(".")) for e in ends) or not (ends or folder):
                raise PluginError(f"{what}: suffixes are like '.npz' (or '*' for any file); give some, or folder=True")
            self._unique("data source", name, self.data_sources, staged)
            staged.append(DataSourceEntry(name, read, protocol, ends, folder, description, dist, version))

        return register

    def _command_registrar(self, dist: str, version: str, staged: list[CommandEntry]) -> Any:
        def register(
            name: str, run: Callable[[Any], int], *, help: str, arguments: Callable[[Any], None] | None = None
        ) -> None:
            if not isinstance(name, str) or not name.replace("-", "").isalnum() or not callable(run):
                raise PluginError(f"command {name!r}: register(name, run, help=...) takes a word and a callable")
            if name in hookspecs.CORE_COMMANDS:
                raise PluginError(f"command {name!r} is one of zoo's own commands; choose another name")
            self._unique("command", name, self.commands, staged)
            staged.append(CommandEntry(name, run, help, arguments, dist, version))

        return register

    def _tokenizer_registrar(self, dist: str, version: str, staged: list[TokenizerEntry]) -> Any:
        def register(name: str, load: Callable[[Path, Mapping[str, Any]], Any]) -> None:
            if not isinstance(name, str) or not name or not callable(load):
                raise PluginError(f"tokenizer {name!r}: register(type, load) takes a name and a callable")
            self._unique("tokenizer", name, self.tokenizers, staged)
            staged.append(TokenizerEntry(name, load, dist, version))

        return register

    def _exporter_registrar(self, dist: str, version: str, staged: list[ExporterEntry]) -> Any:
        def register(
            name: str, export: Callable[[Any, Path, Mapping[str, Any]], None], *, description: str = ""
        ) -> None:
            if not isinstance(name, str) or not name or not callable(export):
                raise PluginError(f"export format {name!r}: register(format, export) takes a name and a callable")
            self._unique("export format", name, self.exporters, staged)
            staged.append(ExporterEntry(name, export, description, dist, version))

        return register

    def _hub_registrar(self, dist: str, version: str, staged: list[HubEntry]) -> Any:
        def register(
            scheme: str,
            resolve: Callable[[str], Path],
            *,
            cached: Callable[[], list[dict[str, Any]]] | None = None,
            describe: Callable[[Path], dict[str, Any] | None] | None = None,
            description: str = "",
        ) -> None:
            if not isinstance(scheme, str) or not SCHEME.fullmatch(scheme) or not callable(resolve):
                raise PluginError(
                    f"hub {scheme!r}: register(scheme, resolve) takes a lowercase word (as in 'hf:') and a callable"
                )
            self._unique("hub", scheme, self.hubs, staged)
            staged.append(HubEntry(scheme, resolve, cached, describe, description, dist, version))

        return register

    @staticmethod
    def _unique(what: str, name: str, loaded: Mapping[str, Any], staged: Iterable[Any]) -> None:
        if any(s.name == name for s in staged):
            raise PluginError(f"registers {what} {name!r} twice")
        if name in loaded:
            other = loaded[name]
            raise PluginError(
                f"{what} {name!r} is already registered by {other.distribution} {other.version}; "
                "rename one, or disable one in registry.toml's [plugins] disable"
            )

    def _fail(self, name: str, dist: str, version: str, reason: str) -> PluginInfo:
        info = PluginInfo(name, dist, version, "failed", reason)
        self.plugins[name] = info
        return info

    # ------------------------------------------------------------------ lookup

    def types(self, kind: Kind) -> dict[str, Entry]:
        """Usable types of one kind (contested types without a configured winner are left out)."""
        out = {}
        for type_name, cands in sorted(self._candidates[kind].items()):
            chosen = self._choose(cands)
            if chosen is not None:
                out[type_name] = chosen
        return out

    def known(self, kind: Kind) -> set[str]:
        """Every registered type name of a kind, contested ones included."""
        return set(self._candidates[kind])

    def conflicts(self) -> list[list[Entry]]:
        """Types registered by several distributions with no winner named in `[plugins.prefer]`."""
        return [c for kind in KINDS for c in self._candidates[kind].values() if self._choose(c) is None]

    def entry(self, kind: Kind, type_name: str) -> Entry:
        """The entry for a type, or an error with close matches / the conflict to resolve."""
        cands = self._candidates[kind].get(type_name)
        if not cands:
            raise UnknownNameError(f"{kind[:-1]} type", type_name, self._candidates[kind], hint=self.not_loaded_hint())
        chosen = self._choose(cands)
        if chosen is None:
            raise PluginError(conflict_message(cands))
        return chosen

    def _choose(self, cands: list[Entry]) -> Entry | None:
        if len(cands) == 1:
            return cands[0]
        wanted = self.settings.prefer.get(cands[0].type)
        for entry in cands:
            if wanted is not None and normalize(entry.distribution) == normalize(wanted):
                return entry
        return None

    def not_loaded_hint(self) -> str:
        """Names plugins that failed or are disabled: a missing type may belong to one of them."""
        off = [
            f"{p.distribution} ({p.status}: {p.reason})" if p.status == "failed" else f"{p.distribution} ({p.status})"
            for p in self.plugins.values()
            if p.status != "loaded"
        ]
        return ("plugins not loaded: " + ", ".join(off)) if off else ""


def spec_type_name(spec_cls: Any, kind: Kind) -> str:
    """Validate a spec class handed to ``register`` and return its ``type`` string."""
    base = BASES[kind]
    if not isinstance(spec_cls, type) or not issubclass(spec_cls, base):
        raise PluginError(f"{spec_cls!r} registered as a {kind[:-1]} must subclass zoo.{base.__name__}")
    field_info = spec_cls.model_fields.get("type")
    args = typing.get_args(field_info.annotation) if field_info is not None else ()
    if field_info is None or typing.get_origin(field_info.annotation) is not Literal or len(args) != 1:
        raise PluginError(f"{spec_cls.__name__}.type must be a Literal of one string, e.g. Literal['my-model']")
    type_name = args[0]
    if not isinstance(type_name, str) or not type_name:
        raise PluginError(f"{spec_cls.__name__}.type must be a non-empty string Literal")
    if spec_cls not in _SCHEMA_CHECKED:  # once per class: every Registry (a test's, a CLI call's) re-registers
        try:
            spec_cls.model_json_schema()
        except Exception as err:
            raise PluginError(f"{spec_cls.__name__} has no valid JSON Schema: {_describe(err)}") from err
        _SCHEMA_CHECKED.add(spec_cls)
    return type_name


_SCHEMA_CHECKED: weakref.WeakSet[type] = weakref.WeakSet()  # spec classes whose JSON Schema was built


def conflict_message(cands: Iterable[Entry]) -> str:
    cands = sorted(cands, key=lambda e: normalize(e.distribution))
    first = cands[0]
    who = " and ".join(f"{e.distribution} {e.version}" for e in cands)
    return (
        f"{first.kind[:-1]} type {first.type!r} is registered by {who}; choose one in registry.toml: "
        f'[plugins.prefer] "{first.type}" = "{first.distribution}", or disable one in [plugins] disable'
    )


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
