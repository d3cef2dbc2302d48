"""Chat templates render sandboxed and bounded: every template below is refused (`zoo.TemplateError`,
exit 2) within the time bound, and none allocates more than a bounded amount of memory. The parity
with transformers' own rendering is in plugins/zoo-hf/tests/test_chat.py."""

from __future__ import annotations

import time
import tracemalloc

import pytest

import zoo
from zoo.lm import chat_templates

CHAT = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]

# Each makes far more than the bounds allow, through a different door: operators, str methods,
# filters, literals, namespaces, macros, loops, output.
HOSTILE = {
    "nested loops (issue 27)": "{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}",
    "string times (issue 27)": "{{ 'a' * 10**8 }}",
    "loops over a string, no call inside": (
        "{% set s = 'a' * 900000 %}{% for x in s %}{% for y in s %}{% endfor %}{% endfor %}"
    ),
    "a power": "{{ 7 ** 100000 }}",
    "an integer division of huge integers": "{% set a = 10**1000 %}{{ (a*a*a*a) // 7 }}",
    "str.ljust": "{{ 'a'.ljust(10**9) }}",
    "str.replace": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}",
    "str.expandtabs": "{{ ('\\t' * 500000).expandtabs(1000) }}",
    "str.translate": "{{ ('a' * 100000).translate({97: 'b' * 1000}) }}",
    "str.join": "{{ ('x' * 1000).join(['y' * 1000] * 900) }}",
    "str.format width": "{{ '{:>1000000000}'.format(1) }}",
    "str.format width from an argument": "{{ '{:>{}}'.format(1, 10**9) }}",
    "printf width": "{{ '%1000000000d' % 1 }}",
    "center filter": "{{ 'a'|center(1000000000) }}",
    "replace filter": "{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}",
    "indent filter": "{{ ('\\n' * 500000)|indent('x' * 1000) }}",
    "join filter": "{{ (['x' * 1000] * 900)|join('y' * 1000) }}",
    "tojson indent": "{{ [[[[[[[[[[1]]]]]]]]]]|tojson(indent=100000) }}",
    "sum of lists": "{{ ([[1]] * 50000)|sum(start=[]) }}",
    "a list shared a million times": "{% set a = [[1] * 1000] * 1000 %}{{ a }}",
    "a list doubled by literals": (
        "{% set ns = namespace(s=[1]) %}{% for i in range(100) %}{% set ns.s = [ns.s, ns.s] %}{% endfor %}{{ ns.s }}"
    ),
    "a string doubled by ~": (
        "{% set ns = namespace(s='a') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
    ),
    "many namespace attributes": "{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = 'a' * 999999 %}}" for i in range(100)),
    "a macro recursing": "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('a') }}",
    "a recursive loop": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "a block set in a loop": "{% set x %}{% for i in range(100000) %}{{ 'a' * 100000 }}{% endfor %}{% endset %}",
    "output": "{% for i in range(100000) %}{{ 'abcdefghij' * 10 }}{% endfor %}",
    "wide characters": "{% set ns = namespace() %}"
    + "".join(f"{{% set ns.a{i} = '\U0001f600' * 999999 %}}" for i in range(40)),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_template_past_a_bound_is_refused_quickly_and_in_little_memory(name, monkeypatch):
    monkeypatch.setattr(chat_templates, "MAX_SECONDS", 0.3)  # the default is 1 s; the checks are the same
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(zoo.TemplateError, match=r"^tokenizer_config\.json: chat template (refused|failed)"):
            zoo.render_chat_template(HOSTILE[name], CHAT, where="tokenizer_config.json: chat template")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.monotonic() - start
    assert seconds < chat_templates.MAX_SECONDS + 1.5, f"{name}: {seconds:.1f} s"
    assert peak < 150 * 2**20, f"{name}: {peak / 2**20:.0f} MiB"


def test_what_is_refused_names_the_bound(monkeypatch):
    monkeypatch.setattr(chat_templates, "MAX_SECONDS", 0.2)

    def refused(template: str) -> str:
        with pytest.raises(zoo.TemplateError) as err:
            zoo.render_chat_template(template, CHAT)
        return str(err.value)

    assert "longer than 0.2 s" in refused(HOSTILE["nested loops (issue 27)"])
    assert "'*' would make a value of 100,000,000+ units, past the bound of 1,000,000" in refused("{{ 'a' * 10**8 }}")
    assert "writes more than 1,000,000 characters" in refused(HOSTILE["output"])
    assert "macros nest deeper than 64" in refused("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")
    assert "raised" not in refused("{{ raise_exception('no system role') }}") and "no system role" in refused(
        "{{ raise_exception('no system role') }}"
    )
    assert "TemplateSyntaxError, line 2: Expected an expression" in refused("\n{% for %}}")
    assert "past the bound of 262,144" in refused("x" * 300_000)


def test_the_bounds_grow_with_the_conversation_and_ordinary_templates_render():
    """A 3 MB conversation (past the 1 MB default) renders: the size bound is 4x what it is given."""
    big = [{"role": "user", "content": "x" * 3_000_000}]
    template = "{% for m in messages %}<{{ m.role }}>{{ m['content'] | trim }}{% endfor %}"
    assert len(zoo.render_chat_template(template, big)) == 3_000_006
    # the sandbox is still there: no attribute of Python's internals
    with pytest.raises(zoo.TemplateError, match=r"SecurityError|unsafe"):
        zoo.render_chat_template("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", CHAT)


def test_speed_on_a_long_conversation():
    chat = [{"role": "user" if i % 2 else "assistant", "content": f"turn {i} " * 20} for i in range(2000)]
    template = (
        "{% for m in messages %}{% if loop.index0 == messages|length - 1 %}[last]{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    )
    start = time.monotonic()
    zoo.render_chat_template(template, chat)
    assert time.monotonic() - start < 0.5
