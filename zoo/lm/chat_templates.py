"""Chat templates (Jinja), rendered sandboxed and bounded.

A chat template comes with a model folder, written by someone else. It renders in jinja2's
``ImmutableSandboxedEnvironment`` configured as transformers configures it (same globals, filters
and ``{% generation %}`` tag, so the text is the same), and within bounds, each refused with
`TemplateError` (exit 2) naming the bound:

* **time**: `MAX_SECONDS` of wall time per render. The generated code calls back at every loop
  iteration, block, macro call, call, filter and operator, and each callback checks the clock.
* **size**: no value the template makes (a string, a list, the text it writes) is larger than
  `MAX_CHARS` units (a character, a list element counts 8), or 4x the conversation it renders when
  that is larger. An operation whose result would be larger is refused *before* it runs, so
  ``'a' * 10**8`` allocates nothing; integers stay under `MAX_INT_BITS`.
* **work**: everything the template makes adds up to at most `WORK_FACTOR` times the size bound
  (what many values held at once, or work done in C between callbacks, can cost).

Macros nest at most `MAX_DEPTH` deep and a template is at most `MAX_TEMPLATE_CHARS` long.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from zoo.errors import ZooError
from zoo.files import shorten

MAX_SECONDS = 1.0
MAX_CHARS = 1_000_000
WORK_FACTOR = 16
MAX_INT_BITS = 4096
MAX_DEPTH = 64
MAX_TEMPLATE_CHARS = 256 * 1024
ELEMENT = 8  # what one element of a list or dict counts, in characters

# Filters that never turn their input into text: their input is not measured (``messages|length``
# in a loop stays cheap); every other filter's input is.
_SHALLOW_FILTERS = frozenset(
    [
        "abs",
        "attr",
        "batch",
        "bool",
        "count",
        "d",
        "default",
        "dictsort",
        "first",
        "float",
        "groupby",
        "int",
        "items",
        "last",
        "length",
        "list",
        "map",
        "max",
        "min",
        "random",
        "reject",
        "rejectattr",
        "reverse",
        "round",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    ]
)


class TemplateError(ZooError):
    """A chat template that failed or went past a bound."""


class _Refused(Exception):
    """Raised inside a render; becomes a `TemplateError` once out of jinja."""


@dataclass
class _Budget:
    deadline: float
    limit: int
    work: int
    depth: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Refused(f"rendering took longer than {MAX_SECONDS:g} s (the bound on a chat template's time)")

    def made(self, value: Any, what: str) -> Any:
        """Count ``value`` (already made) against the size and work bounds."""
        self.spend(size_of(value, self.limit, self), what)
        return value

    def spend(self, size: int, what: str) -> None:
        if size > self.limit:
            raise _Refused(f"{what} would make a value of {size:,}+ units, past the bound of {self.limit:,}")
        self.work -= size
        if self.work < 0:
            raise _Refused(f"it made more than {self.limit * WORK_FACTOR:,} units in all (the bound on its work)")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("zoo_template_budget", default=None)


def _budget() -> _Budget:
    """The running render's budget; outside a render (never expected) a fresh default one."""
    b = _BUDGET.get()
    return b if b is not None else _Budget(time.monotonic() + MAX_SECONDS, MAX_CHARS, MAX_CHARS * WORK_FACTOR)


def size_of(value: Any, cap: int, budget: _Budget | None = None) -> int:
    """The size of ``value`` as text would spell it out (shared parts counted each time they
    appear), stopping as soon as it passes ``cap``."""
    total, stack, seen = 0, [value], 0
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes | bytearray):
            total += len(v)
        elif isinstance(v, int):
            if v.bit_length() > MAX_INT_BITS:
                raise _Refused(f"an integer of {v.bit_length()} bits (past the bound of {MAX_INT_BITS})")
            total += v.bit_length() // 8 + 1
        elif isinstance(v, dict):
            total += ELEMENT * len(v)
            if total <= cap:
                stack.extend(v.keys())
                stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            total += ELEMENT * len(v)
            if total <= cap:
                stack.extend(v)
        elif isinstance(v, jinja2.utils.Namespace):
            stack.append(dict(object.__getattribute__(v, "_Namespace__attrs")))
        else:
            total += ELEMENT
        if total > cap:
            return total
        seen += 1
        if budget is not None and seen % 4096 == 0:
            budget.tick()
    return total


# ---------------------------------------------------------------- estimates made before an operation


def _format_spec_widths(fmt: str) -> Iterable[int]:
    """Every width and precision written in a ``str.format`` string (nested fields included)."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec:
            yield from (int(n) for n in re.findall(r"\d+", spec))
            if "{" in spec:
                yield from _format_spec_widths(spec)


_PRINTF = re.compile(r"%[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(fmt: str, args: Any, b: _Budget) -> None:
    for match in _PRINTF.finditer(fmt):
        for group in match.groups():
            if group == "*":
                values = args if isinstance(args, tuple) else (args,)
                _check_ints(values, b, "a '%*' width")
            elif group and int(group) > b.limit:
                raise _Refused(f"a '%' format width of {group} is past the bound of {b.limit:,}")


def _check_ints(values: Iterable[Any], b: _Budget, what: str) -> None:
    for v in values:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > b.limit:
            raise _Refused(f"{what} of {shorten(v, 40)} is past the bound of {b.limit:,}")


def _text_estimate(s: str | bytes, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], b: _Budget) -> int:
    """How long a string method's result will be, for the methods whose result can be much longer
    than the string (the others are measured once made)."""
    n = len(s)
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(n, width) if isinstance(width, int) else n
    if name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        tabs = s.count("\t") if isinstance(s, str) else s.count(b"\t")
        return n + tabs * max(int(tab), 0)
    if name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = s.count(old) if old else n + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        return n + count * max(0, len(new) - len(old))
    if name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str | bytes)), default=1)
        return n * max(1, longest)
    return 0


def _check_binop(op: str, left: Any, right: Any, b: _Budget) -> None:
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "*":
        if ints:
            estimate = (left.bit_length() + right.bit_length()) // 8
        elif isinstance(right, int) and not isinstance(left, int):
            estimate = size_of(left, b.limit, b) * max(right, 0)
        elif isinstance(left, int) and not isinstance(right, int):
            estimate = size_of(right, b.limit, b) * max(left, 0)
        else:
            return
        b.spend(estimate, f"'{op}'")
    elif op == "**" and ints and right > 0:
        if left.bit_length() * right > MAX_INT_BITS:
            raise _Refused(f"'**' would make an integer past {MAX_INT_BITS} bits")
    elif op == "+" and not ints:
        b.spend(size_of(left, b.limit, b) + size_of(right, b.limit, b), f"'{op}'")
    elif op == "%" and isinstance(left, str):
        _check_printf(left, right, b)


# ---------------------------------------------------------------- the environment


class _Generator(CodeGenerator):
    """jinja2's code generator, calling back into the budget where a template can spend time or
    make values without calling anything: every block body (loops, macros, ifs), ``~``, and
    list, dict and tuple literals (``[a, a]`` doubles ``a``)."""

    def blockvisit(self, nodes: Iterable[jinja2.nodes.Node], frame: Frame) -> None:
        self.writeline("environment.zoo_tick()")
        super().blockvisit(nodes, frame)

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.zoo_made(")
        super().visit_Concat(node, frame)
        self.write(")")

    def visit_List(self, node: jinja2.nodes.List, frame: Frame) -> None:
        self.write("environment.zoo_made(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: jinja2.nodes.Dict, frame: Frame) -> None:
        self.write("environment.zoo_made(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: jinja2.nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # a loop's or a set's targets
            super().visit_Tuple(node, frame)
            return
        self.write("environment.zoo_made(")
        super().visit_Tuple(node, frame)
        self.write(")")


class _GenerationTag(jinja2.ext.Extension):
    """transformers' ``{% generation %}...{% endgeneration %}`` (marks the assistant's text for
    its masks); here it renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])

    def zoo_tick(self) -> None:
        _budget().tick()

    def zoo_made(self, value: Any) -> Any:
        return _budget().made(value, "an expression")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        b = _budget()
        b.tick()
        _check_binop(operator, left, right, b)
        return b.made(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        b = _budget()
        b.tick()
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", "")
        if isinstance(owner, str | bytes):
            b.spend(_text_estimate(owner, name, args, kwargs, b), f"{type(owner).__name__}.{name}()")
            if name == "join" and args:  # materialized once, measured, then joined
                items = list(args[0])
                b.spend(sum(size_of(i, b.limit, b) for i in items) + len(owner) * len(items), "join()")
                args = (items, *args[1:])
        elif isinstance(owner, int) and name == "to_bytes":
            _check_ints(args[:1], b, "to_bytes() length")
        nested = isinstance(obj, Macro)
        if nested:
            b.depth += 1
            if b.depth > MAX_DEPTH:
                raise _Refused(f"macros nest deeper than {MAX_DEPTH}")
        try:
            return b.made(super().call(context, obj, *args, **kwargs), f"calling {name or 'a function'}")
        finally:
            b.depth -= nested

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatted = super().wrap_str_format(value)
        if formatted is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            b = _budget()
            _check_ints(_format_spec_widths(fmt), b, "a format width")
            if re.search(r"\{[^{}]*:[^{}]*\{", fmt):  # a width taken from the arguments: '{:{}}'
                _check_ints([*args, *kwargs.values()], b, "a format width")
            return str(formatted(*args, **kwargs))

        return bounded


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a jinja filter) measured before (its input, its size arguments) and after."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # the context jinja passes first

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        b = _budget()
        b.tick()
        real = list(args[skip:])
        if real and name not in _SHALLOW_FILTERS:
            b.spend(size_of(real[0], b.limit, b), f"the {name!r} filter's input")
        if name in ("center", "batch", "slice", "indent", "wordwrap", "truncate"):
            _check_ints([*real[1:], *kwargs.values()], b, f"the {name!r} filter's size")
        if name == "indent" and real:
            width = real[1] if len(real) > 1 else kwargs.get("width", 4)
            lines = str(real[0]).count("\n") + 1
            b.spend(len(str(real[0])) + lines * (width if isinstance(width, int) else len(str(width))), "indent")
        elif name == "replace" and len(real) >= 3:
            b.spend(_text_estimate(str(real[0]), "replace", [str(a) for a in real[1:3]], {}, b), "replace")
        elif name == "join" and real:
            real[0] = list(real[0])
            sep = str(real[1]) if len(real) > 1 else str(kwargs.get("d", ""))
            b.spend(sum(size_of(i, b.limit, b) for i in real[0]) + len(sep) * len(real[0]), "join")
        elif name == "format" and real and isinstance(real[0], str):
            _check_printf(real[0], tuple(real[1:]), b)
        elif name == "wordwrap" and real:
            text, wrap = str(real[0]), str(kwargs.get("wrapstring") or (real[3] if len(real) > 3 else None) or "\n")
            width = real[1] if len(real) > 1 else kwargs.get("width", 79)
            b.spend(len(text) + (len(text) // max(int(width), 1) + 1) * len(wrap), "wordwrap")
        return b.made(func(*args[:skip], *real, **kwargs), f"the {name!r} filter")

    return bounded


@jinja2.pass_environment
def _bounded_sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """jinja's ``sum`` one item at a time (summing lists in C is quadratic and cannot be stopped)."""
    b = _budget()
    get = jinja2.filters.make_attrgetter(environment, attribute) if attribute is not None else None
    total = start
    for item in iterable:
        b.tick()
        item = get(item) if get is not None else item
        _check_binop("+", total, item, b)
        total = total + item
    return total


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """transformers' ``tojson`` (``json.dumps`` with its options), written piece by piece so that
    an indent that multiplies the text is stopped at the size bound."""
    b = _budget()
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    out, n = [], 0
    for piece in encoder.iterencode(x):
        n += len(piece)
        if n > b.limit:
            raise _Refused(f"tojson would write more than {b.limit:,} characters")
        out.append(piece)
    return "".join(out)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """transformers' ``dict`` global: ``dict(...)`` and ``dict.fromkeys`` only."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """transformers' ``namespace``: no underscore-prefixed attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's own signature trick (self may be a key)
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_' ({name!r})")


def _make_environment() -> _Environment:
    env = _Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        optimized=False,  # no constant folding: everything is evaluated under the budget
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.filters["sum"] = _bounded_sum
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs; no chat template uses it
    env.globals.update(
        raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(), namespace=_Namespace
    )
    return env


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    return _make_environment().from_string(source)


# ---------------------------------------------------------------- rendering


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def conversation(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template: keys whose value is None dropped, and a
    message's reasoning copied under each name templates read it by."""
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TemplateError(f"a chat message must be an object, not {shorten(message, 60)}")
        m = {k: v for k, v in message.items() if v is not None}
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def render_chat_template(
    template: str,
    messages: Iterable[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    where: str = "the chat template",
    **variables: Any,
) -> str:
    """``template`` rendered for ``messages`` (plus ``variables``, e.g. the special tokens), as
    transformers' ``apply_chat_template(tokenize=False)`` renders it, within the bounds above;
    `TemplateError` naming ``where`` when it fails or goes past one."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"{where}: {len(template):,} characters long, past the bound of {MAX_TEMPLATE_CHARS:,}")
    chat = conversation(messages)
    start = time.monotonic()
    probe = _Budget(start + MAX_SECONDS, 10**12, 10**12)
    given = size_of([chat, variables], 4 * MAX_CHARS * 1000, probe)
    limit = max(MAX_CHARS, 4 * given)
    budget = _Budget(start + MAX_SECONDS, limit, limit * WORK_FACTOR)
    token = _BUDGET.set(budget)
    try:
        compiled = _compile(template)
        out, n = [], 0
        for piece in compiled.generate(messages=chat, add_generation_prompt=add_generation_prompt, **variables):
            n += len(piece)
            if n > limit:
                raise _Refused(f"it writes more than {limit:,} characters (the bound on its output)")
            out.append(piece)
        budget.tick()
        return "".join(out)
    except _Refused as err:
        raise TemplateError(f"{where} refused: {err}") from None
    except (RecursionError, MemoryError) as err:
        raise TemplateError(f"{where} refused: it ran out of {type(err).__name__[:-5].lower()}") from None
    except ZooError:
        raise
    except Exception as err:  # jinja's syntax errors, raise_exception(), a template's TypeError...
        line = f", line {err.lineno}" if isinstance(err, jinja2.TemplateSyntaxError) else ""
        raise TemplateError(f"{where} failed ({type(err).__name__}{line}: {shorten(str(err))})") from None
    finally:
        _BUDGET.reset(token)
