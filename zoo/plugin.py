"""zoo's own trainers and samplers, registered through the same hooks as any third-party plugin.

This module is the core distribution's entry point in the group ``zoo`` (see pyproject.toml).
"""

from __future__ import annotations

from zoo.hookspecs import Register, hookimpl


@hookimpl
def zoo_register_trainers(register: Register) -> None:
    from zoo.trainers.specs import CausalLMTrainerSpec, ClassifierTrainerSpec

    register(ClassifierTrainerSpec)
    register(CausalLMTrainerSpec)


@hookimpl
def zoo_register_samplers(register: Register) -> None:
    from zoo.samplers.specs import ALL

    for spec in ALL:
        register(spec)
