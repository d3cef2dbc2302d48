"""Spec fuzzing: generated specs and registry files are accepted, or rejected with zoo's own
error naming a path; never another exception, never a hang."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo.config import config_from_dict, load_config
from zoo.specs import KINDS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_config(ROOT / "registry.toml", env={})
TYPES = [(kind, t, e.spec_cls) for kind in KINDS for t, e in sorted(CONFIG.registry.types(kind).items())]
CASES = {"specs": 0, "toml": 0}
EXAMPLES = examples(100, 250)  # per spec type (72) and per registry-text test
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "gelu", "adamw", "cosine", "", "-1", "1e309"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def spec_dicts(spec_cls):
    """Dicts over the spec's own field names (plus stray keys), with values of any shape."""
    fields = [f for f in spec_cls.model_fields if f != "type"] + ["typo_field", "n_head"]
    return st.dictionaries(st.sampled_from(fields), values, max_size=6)


def assert_zoo_error(err: Exception) -> None:
    assert isinstance(err, zoo.ZooError), f"{type(err).__name__}: {err}"
    if isinstance(err, zoo.SpecError):
        assert err.issues and all(path or "TOML" in msg or "file" in msg for path, msg in err.issues), err.issues


@pytest.mark.parametrize(("kind", "type_name", "spec_cls"), TYPES, ids=[t for _, t, _ in TYPES])
def test_fuzz_every_registered_spec_type(kind, type_name, spec_cls):
    @FUZZ
    @given(spec_dicts(spec_cls))
    def run(data):
        CASES["specs"] += 1
        try:
            spec = CONFIG.spec(kind, {"type": type_name, **data})
        except Exception as err:
            assert_zoo_error(err)
        else:
            assert spec.type == type_name
            assert type(spec).model_validate_json(spec.model_dump_json()) == spec

    run()


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return (
            "nan"
            if isinstance(v, float) and math.isnan(v)
            else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
        )
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"


toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["simplenet", "minigpt", "top-p", "causal-lm", "cuda:7", "fp16-mixed"]),
)
entry = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "d_model",
            "n_heads",
            "hidden",
            "lr",
            "p",
            "temperature",
            "max_steps",
            "device",
            "precision",
            "disable",
            "prefer",
            "bogus",
        ]
    ),
    toml_scalars | st.lists(toml_scalars, max_size=3),
    max_size=5,
)
registry_files = st.dictionaries(
    st.sampled_from(["runtime", "plugins", "models", "samplers", "trainers", "model", "extra"]),
    entry | st.dictionaries(st.sampled_from(["a", "b", "tiny"]), entry, max_size=2),
    max_size=4,
)


@FUZZ
@given(raw=registry_files, garbage=st.sampled_from(["", "[broken\n", "x = = 1\n"]))
def test_fuzz_registry_toml_text(raw, garbage, tmp_path_factory):
    CASES["toml"] += 1
    lines = []
    for table, body in raw.items():
        if body and all(isinstance(v, dict) for v in body.values()):
            for name, sub in body.items():
                lines.append(f'[{table}."{name}"]')
                lines += [f'"{k}" = {toml_value(v)}' for k, v in sub.items()]
        else:
            lines.append(f"[{table}]")
            lines += [f'"{k}" = {toml_value(v)}' for k, v in body.items()]
    text = "\n".join(lines) + "\n" + garbage
    path = tmp_path_factory.mktemp("fuzz") / "registry.toml"
    path.write_text(text)
    try:
        cfg = load_config(path, registry=CONFIG.registry, env={})
    except Exception as err:
        assert_zoo_error(err)
    else:
        assert cfg.source == str(path)
        for kind, name in cfg.unavailable:
            with pytest.raises(zoo.SpecError):
                cfg.spec(kind, name)


@FUZZ
@given(st.text(max_size=30))
def test_fuzz_overrides(text):
    CASES["toml"] += 1
    try:
        config_from_dict(zoo.specs.apply_overrides({}, [text]), registry=CONFIG.registry)
    except Exception as err:
        assert_zoo_error(err)


def test_report_case_counts():
    """Runs last in this file: the number of generated cases, for the record."""
    print(f"\nfuzzed {CASES['specs']} spec dicts over {len(TYPES)} types and {CASES['toml']} registry texts/overrides")
    if CASES["specs"] == 0 and CASES["toml"] == 0:
        pytest.skip("counts the cases of the fuzz tests above: run the file, not this test alone")
    assert CASES["specs"] >= 0.8 * EXAMPLES * len(TYPES) and CASES["toml"] >= 2 * 0.8 * EXAMPLES


@pytest.mark.parametrize(("kind", "type_name", "spec_cls"), TYPES, ids=[t for _, t, _ in TYPES])
def test_non_finite_numbers_are_rejected(kind, type_name, spec_cls):
    """Found by the fuzzer: '1E309' parsed as inf was accepted, then lost in the JSON round trip."""
    floats = [
        n for n, f in spec_cls.model_fields.items() if "float" in str(f.annotation) and "dict" not in str(f.annotation)
    ]
    for name in floats:
        pair = "tuple" in str(spec_cls.model_fields[name].annotation)  # e.g. an optimizer's betas
        for bad in ("1E309", float("nan"), float("-inf")):
            where = rf"{name}\.0" if pair else name
            with pytest.raises(zoo.SpecError, match=rf"{type_name}\.{where}: Input should be a finite number"):
                CONFIG.spec(kind, {"type": type_name, name: [bad, 0.5] if pair else bad})


def test_an_inline_table_with_a_non_finite_number_is_rejected():
    """Found by the fuzzer: {'optimizer': {'': inf}} was accepted, then lost in the JSON round trip."""
    for bad in ({"": float("inf")}, {"betas": [float("nan"), 0.9]}):
        with pytest.raises(zoo.SpecError, match=r"optimizer: .*must be finite"):
            CONFIG.spec("trainers", {"type": "causal-lm", "optimizer": bad})
