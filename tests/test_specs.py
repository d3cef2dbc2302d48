"""Spec validation, TOML paths in errors, close matches, overrides and the JSON Schema."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo
from zoo.config import load_config
from zoo.specs import KINDS, apply_overrides, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_every_toml_file_in_the_repo_parses():
    files = [p for p in ROOT.rglob("*.toml") if ".venv" not in p.parts and p.name != "pyproject.toml"]
    assert files, "no registry files found"
    for path in files:
        cfg = load_config(path, env={})
        assert cfg.source == str(path)


def test_error_names_the_toml_path(tmp_path, make_config):
    path = tmp_path / "r.toml"
    path.write_text('[models.net]\ntype = "simplenet"\nnum_classes = 1\n')
    with pytest.raises(zoo.SpecError, match=r"models\.net\.num_classes: Input should be greater than or equal to 2"):
        load_config(path, env={})


def test_all_errors_are_reported_at_once(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[runtime]\ndevice = "gpu"\n[models.a]\ntype = "simplenet"\nhiden = [3]\n'
        '[trainers.t]\ntype = "classifier"\nlr = -1\n[model.x]\ntype = "simplenet"\n'
    )
    with pytest.raises(zoo.SpecError) as info:
        load_config(path, env={})
    paths = [p for p, _ in info.value.issues]
    assert paths == ["model", "runtime.device", "models.a.hiden", "trainers.t.lr"]
    text = str(info.value)
    assert "did you mean 'hidden'?" in text and "did you mean 'models'?" in text


def test_unknown_type_suggests_close_matches(make_config, capsys, tmp_path):
    cfg = make_config({"models": {"n": {"type": "simplnet"}, "ok": {"type": "simplenet"}}})
    assert "ok" in cfg.presets["models"]  # the rest of the file stays usable
    with pytest.raises(zoo.SpecError, match=r"models\.n: type 'simplnet' is not available: .*did you mean 'simplenet'"):
        cfg.spec("models", "n")
    bad = tmp_path / "r.toml"
    bad.write_text('[models.n]\ntype = "simplnet"\n')
    from zoo.cli import main

    assert main(["check", str(bad)]) == 2
    assert "did you mean 'simplenet'" in capsys.readouterr().err
    with pytest.raises(zoo.SpecError, match=r"models\.x\.type: unknown model type 'simplnet'"):
        cfg.validate_entry("models", {"type": "simplnet"}, "models.x")


def test_unknown_preset_suggests_close_matches(config):
    with pytest.raises(zoo.UnknownNameError, match=r"did you mean 'simplenet-small'"):
        zoo.build_model("simplenet-smal", config=config)


def test_cross_field_rules(make_config):
    with pytest.raises(zoo.SpecError, match=r"batch_size \(10\) must be divisible by grad_accum \(3\)"):
        make_config({"trainers": {"t": {"type": "classifier", "batch_size": 10, "grad_accum": 3}}})
    # a warmup longer than the run is clipped to it when the run starts (with a note), not refused
    cfg = make_config({"trainers": {"t": {"type": "classifier", "max_steps": 10, "schedule": {"warmup_steps": 50}}}})
    fitted, note = cfg.spec("schedules", cfg.presets["trainers"]["t"].schedule).for_steps(10)
    assert fitted.warmup_steps == 9 and note and "warming up over 9" in note


def test_specs_are_immutable_and_round_trip(config):
    spec = config.spec("models", "simplenet-small")
    with pytest.raises(Exception, match="frozen"):
        spec.in_features = 3
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec


def test_overrides_parse_toml_values():
    assert parse_override("trainers.t.lr=3e-4") == (["trainers", "t", "lr"], 3e-4)
    assert parse_override("models.m.hidden=[8, 8]") == (["models", "m", "hidden"], [8, 8])
    assert parse_override("runtime.device=cpu") == (["runtime", "device"], "cpu")
    with pytest.raises(zoo.SpecError, match="expected PATH=VALUE"):
        parse_override("lr")


def test_overrides_are_validated(tmp_path):
    cfg = load_config(ROOT / "registry.toml", ["trainers.classifier-quick.lr=3e-4"], env={})
    assert cfg.presets["trainers"]["classifier-quick"].lr == 3e-4
    # issue 27: the error names the --set that gave the value, not the registry file
    with pytest.raises(
        zoo.SpecError, match=r"^--set trainers\.classifier-quick\.lr=-1: Input should be greater than 0"
    ):
        load_config(ROOT / "registry.toml", ["trainers.classifier-quick.lr=-1"], env={})
    with pytest.raises(zoo.SpecError, match=r"no entry named 'classifer-quick'; did you mean 'classifier-quick'"):
        apply_overrides({"trainers": {"classifier-quick": {}}}, ["trainers.classifer-quick.lr=1"])


def test_schema_covers_every_registered_type(config):
    schema = config.schema()
    text = str(schema)
    for kind in ("models", "trainers", "optimizers", "schedules"):
        for type_name in config.registry.types(kind):
            assert f"'{type_name}'" in text
    assert set(schema["properties"]) == {"runtime", "plugins", *KINDS}
    assert set(KINDS) == {"models", "samplers", "trainers", "loggers", "callbacks", "optimizers", "schedules"}


def test_schema_validates_the_repo_registry(config):
    jsonschema = pytest.importorskip("jsonschema")
    import tomllib

    raw = tomllib.loads((ROOT / "registry.toml").read_text())
    jsonschema.validate(raw, config.schema())
    raw["samplers"]["story"]["p"] = 2.0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, config.schema())


def test_python_dicts_build_like_toml(config):
    model = zoo.build_model({"type": "simplenet", "in_features": 3, "hidden": [5], "num_classes": 2}, config=config)
    assert model.zoo_spec.hidden == [5]
    with pytest.raises(zoo.SpecError, match=r"^simplenet\.hidden: hidden widths must be positive"):
        zoo.build_model({"type": "simplenet", "hidden": [0]}, config=config)


def test_an_override_of_an_unknown_table_is_an_error(tmp_path):
    with pytest.raises(zoo.SpecError, match=r"--set trainer\.lm\.lr=1: unknown table; did you mean 'trainers'"):
        load_config(ROOT / "registry.toml", ["trainer.lm.lr=1"], env={})
