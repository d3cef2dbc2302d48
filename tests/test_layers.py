"""Registry files layer: plugin presets < user file < project file < --registry < --set."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.cli import main
from zoo.config import load_config


@pytest.fixture
def layers(tmp_path, monkeypatch):
    """A user file, a project file (the working directory's registry.toml) and a --registry file."""
    home = tmp_path / "home"
    (home / ".config" / "zoo").mkdir(parents=True)
    user = home / ".config" / "zoo" / "registry.toml"
    user.write_text(
        "[runtime]\nseed = 7\n\n"
        '[models.mine]\ntype = "simplenet"\nin_features = 5\n\n'
        '[trainers.lm]\nbase = "lm"\nlr = 5e-4\n'  # derive the shipped preset of the same name
    )
    project = tmp_path / "proj"
    project.mkdir()
    (project / "registry.toml").write_text(
        '[runtime]\ndevice = "cpu"\n\n'
        '[models.mine]\nbase = "mine"\nhidden = [16]\n\n'  # on top of the user's `mine`
        '[models.wide]\nbase = "minigpt-small"\nd_model = 256\nn_heads = 8\n\n'
        '[trainers.long]\nbase = "lm"\nmax_steps = 3000\nschedule = { warmup_steps = 7 }\n'
    )
    top = tmp_path / "top.toml"
    top.write_text('[models.wide]\nbase = "wide"\nn_layers = 6\n\n[samplers.creative]\ntype = "greedy"\n')
    monkeypatch.chdir(project)
    env = {"HOME": str(home)}
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    return {"env": env, "top": top, "project": project / "registry.toml", "user": user}


def test_each_layer_adds_to_the_one_below(layers):
    cfg = load_config(layers["top"], ["models.wide.dropout=0.1"], env=layers["env"])
    assert cfg.runtime.seed == 7 and cfg.runtime.device == "cpu"  # user + project [runtime] keys
    mine = cfg.presets["models"]["mine"]
    assert (mine.in_features, mine.hidden) == (5, [16])  # user's entry, derived further by the project
    wide = cfg.presets["models"]["wide"]
    assert (wide.d_model, wide.n_heads, wide.n_layers, wide.dropout) == (256, 8, 6, 0.1)  # 4 layers
    assert wide.max_seq_len == 128  # the rest from the shipped minigpt-small
    long = cfg.presets["trainers"]["long"]
    assert long.max_steps == 3000 and long.lr == 5e-4  # project derives from the user's derived `lm`
    schedule = cfg.spec("schedules", long.schedule)
    assert schedule.warmup_steps == 7 and schedule.type == "cosine"  # nested tables merge
    assert cfg.presets["samplers"]["creative"].type == "greedy"  # a plain entry replaces the shipped one
    assert cfg.presets["samplers"]["precise"].type == "sample"  # untouched shipped presets stay


def test_every_preset_says_where_it_came_from(layers, capsys):
    cfg = load_config(layers["top"], env=layers["env"])
    assert cfg.origins[("models", "minigpt-tiny")].startswith("zoo-minigpt ")
    assert cfg.origins[("models", "wide")].startswith(f"{layers['top']}:1 (base wide from registry.toml:8")
    assert "(base minigpt-small from zoo-minigpt" in cfg.origins[("models", "wide")]
    assert cfg.origins[("models", "mine")].startswith("registry.toml:4 (base mine from ")
    assert main(["list", "models", "--json", "--registry", str(layers["top"])]) == 0
    presets = json.loads(capsys.readouterr().out)["models"]["presets"]
    assert presets["minigpt-tiny"]["distribution"] == "zoo-minigpt"
    assert presets["wide"]["distribution"] is None and presets["wide"]["origin"].startswith(str(layers["top"]))
    assert main(["show", "wide", "--registry", str(layers["top"])]) == 0
    assert f"from {layers['top']}:1" in capsys.readouterr().out


def test_check_validates_the_merged_whole(layers, capsys):
    assert main(["check", str(layers["top"])]) == 0
    assert "plugin presets < " in capsys.readouterr().out
    layers["project"].write_text('[models.wide]\nbase = "minigpt-small"\nn_heads = 7\n')  # 128 % 7 != 0
    assert main(["check", str(layers["top"])]) == 2
    err = capsys.readouterr().err
    assert f"{layers['top']}: models.wide" in err and "divisible by n_heads (7)" in err


def test_a_bad_base_names_the_file_and_close_matches(layers, capsys):
    layers["top"].write_text('[models.x]\nbase = "minigpt-smal"\n')
    assert main(["check", str(layers["top"])]) == 2
    err = capsys.readouterr().err
    assert "models.x: " in err and "base 'minigpt-smal' is not a model preset here; did you mean 'minigpt-small'" in err
    layers["top"].write_text('[models.a]\nbase = "b"\n[models.b]\nbase = "a"\n')
    assert main(["check", str(layers["top"])]) == 2
    assert "derives from itself" in capsys.readouterr().err


def test_presets_go_with_their_plugin_and_missing_ones_are_reported(layers, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "zoo-hf")
    layers["top"].write_text('[models.my-llama]\nbase = "hf-llama-tiny"\n[models.x]\ntype = "hf-causal-lm"\n')
    assert main(["list", "models", "--json", "--registry", str(layers["top"])]) == 0
    data = json.loads(capsys.readouterr().out)["models"]
    assert "hf-gpt2-tiny" not in data["presets"]  # zoo-hf's own presets are gone with it
    assert "x" in data["unavailable"] and "zoo-hf (disabled)" in data["unavailable"]["x"]
    assert main(["check", str(layers["top"])]) == 2
    err = capsys.readouterr().err
    assert "models.x: type 'hf-causal-lm' is not available" in err
    assert "models.my-llama: " in err and "base 'hf-llama-tiny' is not a model preset here" in err
    assert "zoo-hf (disabled)" in err


def test_build_model_takes_validated_overrides():
    model = zoo.build_model("minigpt-tiny", dropout=0.1, n_layers=1)
    assert model.zoo_spec.dropout == 0.1 and len(model.blocks) == 1
    with pytest.raises(zoo.SpecError, match=r"models\.minigpt-tiny\.n_heads: .*divisible|n_heads"):
        zoo.build_model("minigpt-tiny", n_heads=5)
    with pytest.raises(zoo.SpecError, match=r"models\.minigpt-tiny\.dropuot: unknown field; did you mean 'dropout'"):
        zoo.build_model("minigpt-tiny", dropuot=0.1)


def test_list_models_by_pattern_and_protocol(capsys):
    names = zoo.list_models("minigpt*", protocol="causal-lm")
    assert {"minigpt", "minigpt-tiny", "minigpt-small", "minigpt-gpt2", "minigpt-gpt2-medium"} <= set(names)
    assert all(n.startswith("minigpt") for n in names)
    assert "simplenet-small" in zoo.list_models(protocol="classifier")
    assert "simplenet-small" not in zoo.list_models(protocol="causal-lm")
    assert main(["list", "models", "*tiny", "--protocol", "causal-lm"]) == 0
    out = capsys.readouterr().out
    assert "minigpt-tiny" in out and "hf-gpt2-tiny" in out and "simplenet" not in out and "trainers:" not in out
    assert main(["list", "*tiny"]) == 0
    assert "lm-tiny" in capsys.readouterr().out  # every kind when no kind is named
