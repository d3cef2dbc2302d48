"""Optimizers and schedules as plugin kinds: zoo's own types and presets, a trainer naming one
(type, preset, table, the older ``name =`` tables), each type's own fields, WSD and linear
factors, a plugin's optimizer and schedule, what `zoo.testing.check_optimizer` catches, and
torch's Muon beside zoo's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from helpers import make_module

import zoo
import zoo.testing
from zoo.cli import main
from zoo.config import load_config
from zoo.runtime import Runtime
from zoo.trainers.engine import build_optimizer
from zoo.trainers.optimizers import AdamWSpec, MuonSpec, SGDSpec, TorchMuonSpec
from zoo.trainers.schedules import LinearSchedule, WarmupStableDecaySchedule
from zoo.trainers.specs import ClassifierTrainerSpec

MODEL = {"type": "simplenet", "in_features": 8, "hidden": [32], "num_classes": 3}
CPU = torch.device("cpu")


def test_zoo_lists_and_shows_its_optimizers_schedules_and_their_presets(capsys):
    assert main(["list", "optimizers"]) == 0
    out = capsys.readouterr().out
    for name in ("adamw", "adam", "sgd", "muon", "torch-muon", "adamw-lm", "muon-lm"):
        assert f"  {name} " in out
    assert main(["list", "schedules"]) == 0
    out = capsys.readouterr().out
    for name in ("constant", "step", "cosine", "linear", "warmup-stable-decay", "cosine-warmup"):
        assert f"  {name} " in out
    assert main(["show", "adamw"]) == 0
    out = capsys.readouterr().out
    assert "optimizer type from zoo" in out and "weight_decay" in out and "fused" in out and "momentum" not in out


def test_each_type_takes_only_its_own_fields(make_config):
    cases = [
        ({"type": "sgd", "betas": [0.9, 0.99]}, r"trainers\.t\.optimizer: sgd\.betas: unknown field; fields of 'sgd'"),
        ({"type": "adamw", "muon_lr": 0.02}, r"optimizer: adamw\.muon_lr: unknown field; fields of 'adamw'"),
        ({"type": "muon", "momentum": 0.9}, r"optimizer: muon\.momentum: unknown field; did you mean 'muon_momentum'"),
        ({"type": "sgd", "nesterov": True, "momentum": 0.0}, r"optimizer: sgd: nesterov needs momentum > 0"),
    ]
    for optimizer, message in cases:
        with pytest.raises(zoo.SpecError, match=message):
            make_config({"trainers": {"t": {"type": "classifier", "optimizer": optimizer}}})
    with pytest.raises(zoo.SpecError, match=r"schedule: cosine\.gamma: unknown field; fields of 'cosine'"):
        make_config({"trainers": {"t": {"type": "classifier", "schedule": {"type": "cosine", "gamma": 0.5}}}})
    with pytest.raises(zoo.SpecError, match=r"optimizer: adamx\.type: unknown optimizer type 'adamx'; did you mean"):
        make_config({"trainers": {"t": {"type": "classifier", "optimizer": {"type": "adamx"}}}})
    with pytest.raises(zoo.SpecError, match=r"trainers\.t\.schedule: unknown schedule 'cosin'; did you mean 'cosine'"):
        make_config({"trainers": {"t": {"type": "classifier", "schedule": "cosin"}}})


def test_older_name_tables_keep_working_and_a_table_without_a_type_is_the_default_type(config):
    old = ClassifierTrainerSpec(optimizer={"name": "sgd", "momentum": 0.0}, schedule={"name": "cosine"})
    assert old.optimizer == {"type": "sgd", "momentum": 0.0} and old.schedule == {"type": "cosine"}
    assert config.spec("optimizers", old.optimizer) == SGDSpec(momentum=0.0)
    bare = ClassifierTrainerSpec(optimizer={"weight_decay": 0.1}, schedule={"warmup_steps": 5})
    assert bare.optimizer == {"type": "adamw", "weight_decay": 0.1}
    assert bare.schedule == {"type": "constant", "warmup_steps": 5}
    same = ClassifierTrainerSpec(optimizer={"type": "sgd", "name": "sgd"})  # both spellings, one type: fine
    assert same.optimizer == {"type": "sgd"}
    assert ClassifierTrainerSpec().optimizer == "adamw" and ClassifierTrainerSpec().schedule == "constant"


def test_a_derived_trainer_changing_the_optimizer_type_keeps_none_of_the_old_types_fields(tmp_path):
    (tmp_path / "r.toml").write_text(
        '[trainers.plain]\nbase = "lm"\noptimizer = { name = "sgd" }\n\n'  # the old spelling over lm's adamw
        '[trainers.five]\nbase = "lm-muon"\noptimizer = { ns_steps = 5 }\n\n'  # the same type: fields merge
        '[trainers.wsd]\nbase = "lm"\nschedule = { type = "warmup-stable-decay", decay_fraction = 0.3 }\n'
    )
    cfg = load_config(tmp_path / "r.toml", env={})
    plain = cfg.presets["trainers"]["plain"]
    assert cfg.spec("optimizers", plain.optimizer) == SGDSpec()  # lm's weight decay and betas are gone
    five = cfg.spec("optimizers", cfg.presets["trainers"]["five"].optimizer)
    assert five == MuonSpec(ns_steps=5, muon_lr=0.02, weight_decay=0.1, betas=(0.9, 0.99))
    wsd = cfg.spec("schedules", cfg.presets["trainers"]["wsd"].schedule)
    assert wsd == WarmupStableDecaySchedule(decay_fraction=0.3)  # not lm's warmup and min_lr_ratio


def test_optimizer_and_schedule_presets_derive_with_base_and_a_trainer_names_them(tmp_path):
    (tmp_path / "r.toml").write_text(
        '[optimizers.heavy]\nbase = "adamw-lm"\nweight_decay = 0.3\n\n'
        '[schedules.short-warmup]\nbase = "cosine-warmup"\nwarmup_steps = 5\n\n'
        '[trainers.t]\ntype = "classifier"\nmax_steps = 20\noptimizer = "heavy"\nschedule = "short-warmup"\n'
    )
    cfg = load_config(tmp_path / "r.toml", env={})
    heavy = cfg.spec("optimizers", "heavy")
    assert heavy == AdamWSpec(weight_decay=0.3, betas=(0.9, 0.99))
    assert cfg.origins[("optimizers", "heavy")].startswith(f"{tmp_path / 'r.toml'}:1 (base adamw-lm from zoo ")
    trainer = cfg.presets["trainers"]["t"]
    assert cfg.spec("schedules", trainer.schedule).warmup_steps == 5
    (tmp_path / "r.toml").write_text('[trainers.t]\ntype = "classifier"\nmax_steps = 5\nschedule = "short-warmup"\n')
    with pytest.raises(zoo.SpecError, match=r"trainers\.t\.schedule: unknown schedule 'short-warmup'"):
        load_config(tmp_path / "r.toml", env={})
    (tmp_path / "r.toml").write_text('[trainers.t]\ntype = "classifier"\nmax_steps = 40\nschedule = "cosine-warmup"\n')
    cfg = load_config(tmp_path / "r.toml", env={})  # a warmup longer than the run is clipped, not refused
    fitted, note = cfg.spec("schedules", "cosine-warmup").for_steps(40)
    assert fitted.warmup_steps == 39 and note and "warmup_steps 50 does not fit a run of 40 steps" in note


def test_linear_and_warmup_stable_decay_factors():
    linear = LinearSchedule(warmup_steps=10, min_lr_ratio=0.2)
    assert [linear.factor(s, 110) for s in (0, 9, 10, 60, 109)] == pytest.approx([0.1, 1.0, 1.0, 0.6, 0.2 + 0.8 / 100])
    wsd = WarmupStableDecaySchedule(warmup_steps=10, decay_fraction=0.2)
    factors = [wsd.factor(s, 100) for s in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # warmup
    assert factors[10:81] == [1.0] * 71  # stable up to and including the first decay step (80)
    assert factors[80:] == pytest.approx([1 - i / 20 for i in range(20)])  # straight down over the last 20
    floor = WarmupStableDecaySchedule(decay_fraction=0.5, min_lr_ratio=0.1)
    assert floor.factor(50, 100) == 1.0 and floor.factor(75, 100) == pytest.approx(0.55)
    assert floor.factor(100, 100) == pytest.approx(0.1)
    WarmupStableDecaySchedule(warmup_steps=80, decay_fraction=0.2).check_steps(100)  # warmup ends as decay starts
    with pytest.raises(ValueError, match=r"warmup_steps \(81\) must end before the decay starts at step 80"):
        WarmupStableDecaySchedule(warmup_steps=81, decay_fraction=0.2).check_steps(100)


def test_the_engine_follows_a_named_schedule(tmp_path):
    torch.manual_seed(0)
    model = zoo.build_model(MODEL)
    spec = ClassifierTrainerSpec(
        max_steps=20, batch_size=16, log_every=1, eval_every=0, progress=False, lr=0.01,
        schedule={"type": "warmup-stable-decay", "warmup_steps": 2, "decay_fraction": 0.25},
    )  # fmt: skip
    spec.build().fit(model, Runtime(device="cpu"), tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r.get("split") == "train" and "lr" in r]
    # warmup 2 steps, stable to step 15 (the decay's first step, at 1.0), then down over the last 5
    assert lrs == pytest.approx([0.005, *[0.01] * 15, 0.008, 0.006, 0.004, 0.002])


class SignSpec(zoo.OptimizerSpec):
    """Sign descent with momentum (a plugin's optimizer, public API only)."""

    type: Literal["sign"] = "sign"
    beta: float = zoo.Field(0.9, ge=0.0, lt=1.0, description="momentum of the gradient's running mean")

    def build(self, model: Any, lr: float, device: Any) -> Any:
        return SignDescent(zoo.param_groups(model.parameters(), lr, 0.0), lr=lr, beta=self.beta)


class SignDescent(torch.optim.Optimizer):
    def __init__(self, groups: Any, *, lr: float, beta: float) -> None:
        super().__init__(groups, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                mean = self.state[p].setdefault("mean", torch.zeros_like(p))
                mean.lerp_(p.grad, 1 - group["beta"])
                p.add_(mean.sign(), alpha=-group["lr"])


class HalvingSpec(zoo.ScheduleSpec):
    """The lr halves every ``every`` steps (a plugin's schedule)."""

    type: Literal["halving"] = "halving"
    every: int = zoo.Field(5, gt=0, description="steps between halvings")

    def build(self) -> Any:
        every = self.every

        class Halving:
            def factor(self, step: int, max_steps: int) -> float:
                return 0.5 ** (step // every)

        return Halving()


def test_a_plugin_registers_an_optimizer_and_a_schedule_that_trainers_name(tmp_path, make_config):
    plugin = make_module(
        "extras",
        zoo_register_optimizers=zoo.hookimpl(lambda register: register(SignSpec)),
        zoo_register_schedules=zoo.hookimpl(lambda register: register(HalvingSpec)),
        zoo_register_presets=zoo.hookimpl(
            lambda register: register("optimizers", "slow-sign", {"type": "sign", "beta": 0.5})
        ),
    )
    cfg = make_config({}, plugin)
    assert "sign" in cfg.names("optimizers") and "slow-sign" in cfg.names("optimizers")
    assert "halving" in cfg.names("schedules")
    zoo.testing.check_optimizer("sign", config=cfg)
    zoo.testing.check_schedule("halving", config=cfg)
    torch.manual_seed(0)
    model = zoo.build_model(MODEL, config=cfg)
    spec = ClassifierTrainerSpec(
        max_steps=12, batch_size=16, eval_every=0, log_every=1, progress=False, lr=0.01,
        optimizer="slow-sign", schedule={"type": "halving", "every": 5},
    )  # fmt: skip
    result = spec.build().fit(model, Runtime(device="cpu"), tmp_path / "r", config=cfg)
    assert result.steps == 12
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r.get("split") == "train" and "lr" in r]
    assert lrs == pytest.approx([0.01] * 5 + [0.005] * 5 + [0.0025] * 2)
    state = json.loads((tmp_path / "r" / "checkpoints" / "step-00000012" / "state.json").read_text())
    assert [g["beta"] for g in state["optimizer"]["param_groups"]] == [0.5, 0.5]  # the preset's


class CachedLr(torch.optim.SGD):
    """Reads the lr it was built with, not the group's: the schedule would change nothing."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, lr=lr)
        self.fixed = lr

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.fixed)


class Forgetful(torch.optim.Optimizer):
    """Counts its steps in an attribute a checkpoint does not hold: a resume starts it over."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})
        self.steps = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self.steps += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] / self.steps)


def _optimizer_plugin(name: str, make: Any) -> Any:
    class Spec(zoo.OptimizerSpec):
        """A broken optimizer."""

        type: Literal[name] = name  # type: ignore[valid-type]

        def build(self, model: Any, lr: float, device: Any) -> Any:
            return make(model.parameters(), lr)

    return make_module(f"broken_{name}", zoo_register_optimizers=zoo.hookimpl(lambda register: register(Spec)))


def test_check_optimizer_catches_what_it_checks(make_config):
    cases = [
        ("cached-lr", CachedLr, r"cached-lr: a step at lr 0 changed parameters; read group\['lr'\]"),
        ("forgetful", Forgetful, r"forgetful: a run resumed from a checkpoint differs from an uninterrupted one"),
        ("not-torch", lambda params, lr: object(), r"must return a torch\.optim\.Optimizer, not object"),
    ]
    for name, make, message in cases:
        cfg = make_config({}, _optimizer_plugin(name, make), entry_points=False)
        with pytest.raises((AssertionError, zoo.PluginError), match=message):
            zoo.testing.check_optimizer(name, config=cfg)


def test_check_schedule_catches_a_negative_factor(make_config):
    class Below(zoo.ScheduleSpec):
        """Goes below zero."""

        type: Literal["below"] = "below"

        def build(self) -> Any:
            return LinearSchedule(min_lr_ratio=0.0).model_copy(update={"min_lr_ratio": -0.5})

    plugin = make_module("below", zoo_register_schedules=zoo.hookimpl(lambda register: register(Below)))
    with pytest.raises(AssertionError, match=r"below: factor\(\) must be a finite number >= 0, got -"):
        zoo.testing.check_schedule("below", config=make_config({}, plugin, entry_points=False))


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="this torch has no torch.optim.Muon")
def test_torch_muon_takes_zoos_groups_and_steps_like_zoos_muon_on_plain_matrices():
    def mlp() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Linear(16, 3)
        )

    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), torch.randn(32, 3)
    params = {}
    for spec in (MuonSpec(weight_decay=0.1), TorchMuonSpec(weight_decay=0.1)):
        model = mlp()
        opt = build_optimizer(spec, model, 3e-3, CPU)
        assert [(g["name"], g["algo"], g["peak_lr"]) for g in opt.param_groups] == [
            ("muon", "muon", 0.02), ("decay", "adamw", 3e-3), ("no_decay", "adamw", 3e-3),
        ]  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = group["peak_lr"]
        for _ in range(3):
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
            opt.zero_grad()
        params[spec.type] = [p.detach().clone() for p in model.parameters()]
    start = [p.detach() for p in mlp().parameters()]
    for ours, theirs, first in zip(params["muon"], params["torch-muon"], start, strict=True):
        moved = (ours - first).abs().max()
        assert moved > 0 and (ours - theirs).abs().max() <= 0.02 * moved  # bf16 Newton-Schulz on both sides


def test_the_parameter_groups_are_the_ones_zoo_always_had(config):
    model = zoo.build_model({**MODEL, "hidden": [16, 16]}, config=config)
    named = list(model.named_parameters())
    names = {id(p): n for n, p in named}

    def groups(spec: Any) -> dict[str, tuple[list[str], float, float]]:
        opt = build_optimizer(spec, model, 1e-3, CPU)
        return {
            g["name"]: ([names[id(p)] for p in g["params"]], g["weight_decay"], g["peak_lr"]) for g in opt.param_groups
        }

    matrices = [n for n, p in named if p.ndim >= 2]
    vectors = [n for n, p in named if p.ndim < 2]
    for spec in (AdamWSpec(weight_decay=0.1), SGDSpec(weight_decay=0.1)):
        assert groups(spec) == {"decay": (matrices, 0.1, 1e-3), "no_decay": (vectors, 0.0, 1e-3)}
    assert groups(AdamWSpec(weight_decay=0.1, decay_norms_and_biases=True)) == {
        "decay": ([n for n, _ in named], 0.1, 1e-3)
    }
    hidden = matrices[:-1]  # every Linear but the output layer, in parameter order
    assert groups(MuonSpec(weight_decay=0.1)) == {
        "muon": (hidden, 0.1, 0.02), "decay": (matrices[-1:], 0.1, 1e-3), "no_decay": (vectors, 0.0, 1e-3),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "muon", "torch-muon", "adamw-lm", "muon-lm"])
def test_zoos_optimizers_read_the_lr_survive_a_checkpoint_and_resume_exactly(config, name):
    if name == "torch-muon" and not hasattr(torch.optim, "Muon"):
        pytest.skip("this torch has no torch.optim.Muon")
    zoo.testing.check_optimizer(name, config=config)


def test_optimizer_and_schedule_hook_modules_import_no_torch():
    zoo.testing.check_hook_module("zoo.trainers.optimizers")
    zoo.testing.check_hook_module("zoo.trainers.schedules")


def test_the_walkthrough_table_lists_every_hook():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md").read_text()
    for hook in ("zoo_register_optimizers", "zoo_register_schedules"):
        assert f"`{hook}(register)`" in doc
