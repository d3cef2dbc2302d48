"""Every hook of the plugin contract (what the built objects must offer is in `zoo.protocols`).

A plugin is any module (usually exposed through the entry-point group ``zoo``) that implements
some of the hooks below with ``@zoo.hookimpl``. Each hook receives one argument, ``register``: call
it once per spec class (or, for presets, per named spec) the plugin provides.

    from typing import Literal
    import zoo

    class MySpec(zoo.ModelSpec):
        type: Literal["my-model"] = "my-model"
        width: int = zoo.Field(64, gt=0, description="hidden width")

        def build(self):
            from my_plugin.model import MyModel   # torch is imported here, not at import time
            return MyModel(self)

    @zoo.hookimpl
    def zoo_register_models(register):
        register(MySpec)

Besides spec types and presets, a plugin may register data sources (a format the trainers read)
and command-line commands; what the registered objects must offer is in `zoo.protocols`.

Rules the registry enforces: a hook module must not import torch at import time (so that
``zoo list`` stays fast); ``type`` is a single-string ``Literal``; a hook that raises, or a
spec class that is invalid, takes down only its own plugin, which ``zoo plugins`` then reports
as failed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type[Any]], None]
RegisterPreset = Callable[..., None]  # register(kind, name, fields, *, description="")
RegisterDataSource = Callable[..., None]  # register(name, read, *, protocol, suffixes=(), folder=False, description="")
RegisterCommand = Callable[..., None]  # register(name, run, *, help, arguments=None)
RegisterTokenizer = Callable[..., None]  # register(type, load)
RegisterExporter = Callable[..., None]  # register(format, export, *, description="")
RegisterHub = Callable[..., None]  # register(scheme, resolve, *, cached=None, describe=None, description="")


def lazy(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` as a callable that imports its module when first called: what
    a hook module registers as a data source, tokenizer, exporter or command, so that importing
    the hook module imports no torch (``zoo list`` stays fast)."""
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"lazy({target!r}): give 'package.module:function'")

    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"{target}, imported when called"
    return call


# the core's own commands: a plugin command never shadows one
CORE_COMMANDS = ("list", "show", "plugins", "schema", "check", "train")


@hookspec
def zoo_register_models(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each model.

    ``spec_cls`` subclasses ``zoo.ModelSpec`` and sets ``protocol`` (``"classifier"`` or
    ``"causal-lm"``); its ``build()`` returns a ``torch.nn.Module`` on the CPU in fp32 (the
    runtime moves it) speaking `zoo.Classifier` or `zoo.CausalLM`. A classifier's spec also
    states its input (`zoo.ClassifierSpec`: ``input_kind``, ``input_shape``, ``num_classes``).
    """


@hookspec
def zoo_register_samplers(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each sampler.

    ``spec_cls`` subclasses ``zoo.SamplerSpec``; its ``build()`` returns a `zoo.Sampler`:
    ``select(logits, seen, generators) -> next_ids`` and ``needs_seen``.
    """


@hookspec
def zoo_register_trainers(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each trainer.

    ``spec_cls`` subclasses ``zoo.TrainerSpec`` and sets ``protocol``, the model protocol it
    trains; its ``build()`` returns a `zoo.Trainer` (``fit(model, runtime, out, *, data, resume,
    force, run_info, save_artifact, inputs, config)``); subclass `zoo.EngineTrainer` to reuse
    the training loop and write only a `zoo.Task`.
    """


@hookspec
def zoo_register_loggers(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each logger.

    ``spec_cls`` subclasses ``zoo.LoggerSpec``; its ``build()`` returns a `zoo.Logger`
    (``start(out, step)``, ``log(record)``, ``close()``). A trainer names the loggers it writes to
    in its ``loggers`` list (``["jsonl", "tensorboard"]``); only the main process logs.
    """


@hookspec
def zoo_register_callbacks(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each callback.

    ``spec_cls`` subclasses ``zoo.CallbackSpec``; its ``build()`` returns a `zoo.Callback`
    (subclass the `zoo.Callback` base and override what you need: ``on_step_end``, ``on_eval``,
    ``on_checkpoint``, ``should_stop``, and ``state_dict``/``load_state_dict`` for exact resume).
    A trainer lists the callbacks it runs in its ``callbacks`` list; every process runs them.
    """


@hookspec
def zoo_register_optimizers(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each optimizer.

    ``spec_cls`` subclasses ``zoo.OptimizerSpec``; its ``build(model, lr, device)`` returns a
    ``torch.optim.Optimizer`` over the model's trainable parameters (`zoo.param_groups` gives
    zoo's decay / no_decay split). A group's ``peak_lr`` (default ``lr``) times the schedule's
    factor becomes its ``lr`` before every step; read ``group["lr"]`` in ``step()``, and keep the
    state in ``state_dict()`` (tensors and numbers) so a resumed run continues exactly. A trainer
    names it in ``optimizer = "my-optimizer"`` or ``{type = "my-optimizer", ...}``.
    """


@hookspec
def zoo_register_schedules(register: Register) -> None:
    """Called once when a registry loads this plugin: ``register(spec_cls)`` for each schedule.

    ``spec_cls`` subclasses ``zoo.ScheduleSpec``; its ``build()`` returns a `zoo.Schedule`
    (``factor(step, max_steps)``, the multiplier of the peak lr at 0-based ``step``), and its
    ``check_steps(max_steps)`` raises ``ValueError`` for a run it cannot serve. A trainer names it
    in ``schedule = "my-schedule"`` or ``{type = "my-schedule", ...}``.
    """


@hookspec
def zoo_register_presets(register: RegisterPreset) -> None:
    """Called once when a registry loads this plugin: named, ready-made specs the plugin ships.

    ``register(kind, name, fields, description="")`` with ``kind`` one of ``"models"``,
    ``"samplers"``, ``"trainers"``, ``"loggers"``, ``"callbacks"``, ``"optimizers"``,
    ``"schedules"`` and ``fields`` a plain dict as a registry file would hold it
    (``{"type": "minigpt", "d_model": 128, ...}``, or ``{"base": "other-preset", ...}`` to derive
    one). Presets are validated when a configuration is built, once every type is registered, so a
    preset may use another plugin's type. Registry files layer on top: a user's or project's
    ``registry.toml`` may override a preset by name or derive a new one with ``base``.
    """


@hookspec
def zoo_register_data_sources(register: RegisterDataSource) -> None:
    """Called once when a registry loads this plugin: the data formats it reads.

    ``register(name, read, *, protocol, suffixes=(), folder=False, description="")``: ``read(path,
    options) -> dataset`` turns a path and the trainer's ``data_options`` (a dict) into a dataset of
    the model ``protocol``: `zoo.Examples` for ``"classifier"``, a list of `zoo.protocols.TextSource`
    for ``"causal-lm"``. A path is matched by its suffix (``".npz"``; ``"*"`` takes any file, after
    every exact suffix) or, with ``folder=True``, as a directory; a trainer's ``data_format`` names a
    source explicitly. ``read`` raises `zoo.DataError` naming the file (and line) for bad data, and
    imports heavy modules (numpy, Pillow) inside, not at import time.
    """


@hookspec
def zoo_register_commands(register: RegisterCommand) -> None:
    """Called once when a registry loads this plugin: ``zoo`` subcommands it adds.

    ``register(name, run, *, help, arguments=None)``: ``arguments(parser)`` adds the command's
    arguments to its ``argparse.ArgumentParser`` (``--registry``, ``--set`` and ``--debug`` are
    already there); ``run(args) -> int`` runs it and returns the exit code. Raise `zoo.ZooError`
    for bad input: the CLI prints its message and exits 2. ``run`` imports torch inside, so that
    ``zoo --help`` and ``zoo list`` stay fast. A name of a core command is refused.
    """


@hookspec
def zoo_register_tokenizers(register: RegisterTokenizer) -> None:
    """Called once when a registry loads this plugin: tokenizer kinds it can restore from an artifact.

    ``register(type, load)``: ``load(folder, description) -> zoo.Tokenizer`` restores a tokenizer
    whose ``describe()`` returned ``{"type": type, ...}`` and whose ``save(folder)`` wrote the files
    in ``folder``. Nothing read may run code or reach the network.
    """


@hookspec
def zoo_register_exporters(register: RegisterExporter) -> None:
    """Called once when a registry loads this plugin: formats ``zoo export --format NAME`` writes.

    ``register(format, export, *, description="")``: ``export(model, folder, options)`` writes a
    loaded zoo model (on the CPU, in eval mode) into ``folder``, a fresh directory zoo moves into
    place only when ``export`` returns; raise `zoo.ZooError` naming what the format cannot hold.
    """


@hookspec
def zoo_register_hubs(register: RegisterHub) -> None:
    """Called once when a registry loads this plugin: model hubs it reaches by reference.

    ``register(scheme, resolve, *, cached=None, describe=None, description="")``: a reference ``SCHEME:NAME``
    (e.g. ``hf:ORG/NAME@REVISION``) is accepted everywhere a model folder is, and ``resolve(NAME)
    -> Path`` turns it into a local folder (downloading into the hub's own cache when needed, only
    after the files passed the same trust rules as a local folder: a refused repo downloads no
    weights). Raise `zoo.ZooError` with one message for a bad name, a refused repo, a missing
    network or a file missing from the cache. ``cached() -> list[dict]`` lists what is on disk
    already (``zoo list --cached``): each dict has at least ``reference``, ``revision``, ``size``.
    ``describe(folder) -> dict | None`` is the provenance of weights read from a folder ``resolve``
    gave (``{"reference": "SCHEME:NAME@REVISION", "revision": ..., "files": {name: sha256}}``),
    recorded as the parent of what is trained or saved from them.
    """
