"""CLI commands for language models (generate, plot, export, import)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Added by later work; kept separate so that cli.py stays about the core."""
