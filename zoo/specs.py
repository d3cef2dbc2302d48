"""Spec base classes, the `[runtime]` and `[plugins]` tables, and TOML helpers.

Specs are pure pydantic: importing this module never imports torch. A spec names what builds it
(``builder = "package.module:Callable"``, imported when ``build()`` is called), so the
implementation may import its spec without a circle; a spec may also write ``build()`` itself.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zoo.errors import SpecError
from zoo.files import check_depth, shorten
from zoo.hookspecs import lazy
from zoo.protocols import InputKind

Kind = Literal["models", "samplers", "trainers", "loggers", "callbacks", "optimizers", "schedules"]
KINDS: tuple[Kind, ...] = ("models", "samplers", "trainers", "loggers", "callbacks", "optimizers", "schedules")
# "any": loggers, callbacks, optimizers and schedules serve every trainer
Protocol = Literal["classifier", "causal-lm", "any"]
MAX_SEED = 2**32 - 1  # what every generator zoo seeds (Python, torch, numpy) accepts
QUANTIZE_METHODS = ("none", "int8")  # --quantize: what `zoo.quantize` can do (zoo/quantization.py)


# Every spec and settings table: unknown keys are errors, values are immutable, and floats must be
# finite (an infinite lr or temperature is a mistake, and JSON cannot carry it back).
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, protected_namespaces=())


class Spec(BaseModel):
    """Base of every buildable spec: strict (unknown fields are errors) and immutable."""

    model_config = STRICT

    kind: ClassVar[Kind]
    protocol: ClassVar[Protocol]  # the model protocol a model speaks, or a trainer/sampler works on
    type: str

    # "package.module:Callable", called with the spec (then build()'s arguments): the arrow from a
    # spec to its implementation is declared here and imported only when something is built
    builder: ClassVar[str | None] = None

    # what build takes is the kind's: nothing, except an optimizer's (model, lr, device)
    def build(self, *args: Any, **kwargs: Any) -> Any:
        if self.builder is None:
            raise NotImplementedError(f"{type(self).__name__}: set `builder` or implement build()")
        return lazy(self.builder)(self, *args, **kwargs)

    @classmethod
    def example(cls) -> Spec:
        """A small valid instance, for conformance checks (the defaults, unless overridden)."""
        return cls.model_validate({})


class ModelSpec(Spec):
    """A model: ``build()`` returns a ``torch.nn.Module`` speaking ``protocol``."""

    kind: ClassVar[Kind] = "models"
    protocol: ClassVar[Protocol] = "classifier"
    # a classifier's input (see zoo.protocols.ClassifierSpec for input_shape and num_classes)
    input_kind: ClassVar[InputKind] = "features"

    @classmethod
    def from_folder(cls, folder: Path) -> ModelSpec | None:
        """The spec that loads a local model folder this family reads (for ``--init-from``), or
        None. Called for every registered model type; read only small files here."""
        return None

    def artifact_spec(self, module: Any) -> ModelSpec:
        """The spec to store in an artifact's spec.json (e.g. with a path resolved inline)."""
        return self

    def write_artifact_files(self, module: Any, folder: Any) -> None:
        """Extra files a model family puts in its artifacts (e.g. a transformers config.json)."""


class SamplerSpec(Spec):
    """A decoding strategy for causal LMs: ``build()`` returns a sampler."""

    kind: ClassVar[Kind] = "samplers"
    protocol: ClassVar[Protocol] = "causal-lm"


class TrainerSpec(Spec):
    """A training recipe: ``build()`` returns a trainer for models speaking ``protocol``."""

    kind: ClassVar[Kind] = "trainers"
    protocol: ClassVar[Protocol] = "classifier"
    input_kinds: ClassVar[tuple[InputKind, ...]] = ("features",)  # what its classifiers may take

    def references(self) -> list[tuple[Kind, str, str | dict[str, Any]]]:
        """The named entries of other kinds this recipe uses, ``(kind, field, name or table)``:
        checked to exist when a registry is read (loggers, callbacks, optimizer, schedule)."""
        return []

    def check_reference(self, named: Spec) -> None:
        """Raise ``ValueError`` when a named entry exists but this recipe cannot use it."""


class LoggerSpec(Spec):
    """Where a run's metrics go: ``build()`` returns a `zoo.protocols.Logger`."""

    kind: ClassVar[Kind] = "loggers"
    protocol: ClassVar[Protocol] = "any"


class CallbackSpec(Spec):
    """Code that watches a run: ``build()`` returns a `zoo.protocols.Callback`."""

    kind: ClassVar[Kind] = "callbacks"
    protocol: ClassVar[Protocol] = "any"


class OptimizerSpec(Spec):
    """An optimizer: ``build(model, lr, device)`` returns a ``torch.optim.Optimizer`` over the
    model's trainable parameters. A group may carry ``peak_lr`` (default: ``lr``); the engine sets
    each group's ``lr`` to its ``peak_lr`` times the schedule's factor before every step."""

    kind: ClassVar[Kind] = "optimizers"
    protocol: ClassVar[Protocol] = "any"

    def build(self, model: Any, lr: float, device: Any) -> Any:
        return super().build(model, lr, device)


class ScheduleSpec(Spec):
    """A learning-rate schedule: ``build()`` returns a `zoo.protocols.Schedule` (``factor(step,
    max_steps)``, the multiplier of the peak lr at each step)."""

    kind: ClassVar[Kind] = "schedules"
    protocol: ClassVar[Protocol] = "any"

    def check_steps(self, max_steps: int) -> None:
        """Raise ``ValueError`` when this schedule cannot run ``max_steps`` steps (e.g. a warmup
        longer than the run); called when a trainer names it."""


BASES: dict[str, type[Spec]] = {
    "models": ModelSpec,
    "samplers": SamplerSpec,
    "trainers": TrainerSpec,
    "loggers": LoggerSpec,
    "callbacks": CallbackSpec,
    "optimizers": OptimizerSpec,
    "schedules": ScheduleSpec,
}


class RuntimeSpec(BaseModel):
    """`[runtime]`: where and how everything runs."""

    model_config = STRICT

    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "fp32", "bf16-mixed", "fp16-mixed"] = Field(
        "auto", description="auto picks bf16-mixed on GPUs that support it, else fp32"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for every random number generator")
    compile: bool = Field(False, description="wrap the model in torch.compile (opt-in)")
    distributed: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto", description="auto uses DDP when launched by torchrun, else a single process"
    )

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps"):
            return value
        if value.startswith("cuda:") and value[5:].isdigit():
            return value
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, not {value!r}")


class PluginsSpec(BaseModel):
    """`[plugins]`: which plugin distributions load, and who wins a contested type."""

    model_config = STRICT

    disable: list[str] = Field(
        default_factory=list, description="distribution names not to load (also $ZOO_DISABLE_PLUGINS)"
    )
    prefer: dict[str, str] = Field(
        default_factory=dict,
        description="type -> distribution that wins when several plugins register that type",
    )


# --------------------------------------------------------------------------- error formatting


def format_validation_error(
    err: ValidationError, prefix: str, spec_cls: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """Turn pydantic's errors into `(toml.path, message)` pairs, suggesting field names."""
    issues = []
    for e in err.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        path = ".".join([prefix, *loc]) if prefix else ".".join(loc)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and spec_cls is not None and loc:
            known = [f for f in spec_cls.model_fields if f != "type"]
            close = difflib.get_close_matches(loc[-1], known, n=2, cutoff=0.6)
            msg = "unknown field"
            if close:
                msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
            type_name = spec_cls.model_fields["type"].default if "type" in spec_cls.model_fields else None
            of = f" of {spec_cls.__name__ if not isinstance(type_name, str) else repr(type_name)}" if type_name else ""
            msg += f"; fields{of}: " + ", ".join(known)
        elif e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {shorten(e['input'])})"
        issues.append((path, msg))
    return issues


def validate(cls: type[BaseModel], data: Any, prefix: str = "", source: str | None = None) -> Any:
    """``cls.model_validate(data)`` with zoo's path-naming `SpecError` on failure."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, prefix, cls), source=source) from None


# --------------------------------------------------------------------------- TOML and overrides


def toml_file_error(message: str) -> SpecError:
    """A registry file (or --set value) that cannot be read: the message names it."""
    return SpecError([("", message)])


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SpecError([("", f"invalid TOML: {err}")], source=source) from None
    except (RecursionError, ValueError):
        raise SpecError([("", "invalid TOML: nested too deeply or a number too large")], source=source) from None
    check_depth(data, source, toml_file_error)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], value); the value is read as TOML, else a string."""
    key, sep, raw = text.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or len(parts) < 2 or not all(parts):
        raise SpecError([("--set", f"{text!r}: expected PATH=VALUE, e.g. runtime.seed=3")])
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except (RecursionError, ValueError):
        raise SpecError([("--set", f"{shorten(text)}: the value nests too deeply or is too large")]) from None
    check_depth(value, f"--set {shorten(text, 60)}", toml_file_error)
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of a parsed registry file with ``--set`` overrides applied (not validated)."""
    import copy

    data = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        if parts[0] in KINDS and len(parts) > 2 and parts[1] not in data.get(parts[0], {}):
            known = list(data.get(parts[0], {}))
            where = ".".join(parts[:2])
            raise SpecError([(where, _no_such_entry(parts[1], known))], source=f"--set {text}")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise SpecError([(where, "is a value, not a table")], source=f"--set {text}")
            node = child
        node[parts[-1]] = value
    return data


def _no_such_entry(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    msg = f"no entry named {name!r}"
    if close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return msg


def field_table(cls: type[BaseModel]) -> list[dict[str, Any]]:
    """Fields of a spec class for `zoo show`: name, type, default, description, bounds."""
    rows = []
    for name, info in cls.model_fields.items():
        default: Any = info.get_default(call_default_factory=True) if not info.is_required() else None
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        rows.append(
            {
                "name": name,
                "type": _type_name(info.annotation),
                "default": default,
                "required": info.is_required(),
                "description": info.description or "",
                "bounds": [_bound(m) for m in info.metadata],
            }
        )
    return rows


_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bound(meta: Any) -> str:
    for attr, op in _OPS.items():
        if hasattr(meta, attr):
            return f"{op} {getattr(meta, attr)}"
    return str(meta)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")
