"""Helpers shared by tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import types


def make_module(name: str, **attrs: object) -> types.ModuleType:
    """An inline plugin module."""
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module
