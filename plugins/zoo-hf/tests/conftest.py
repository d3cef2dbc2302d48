"""Fixtures for the zoo-hf tests: ``hub``, a Hugging Face Hub served on 127.0.0.1 (see hubserver.py)."""

from hubserver import hub

__all__ = ["hub"]
