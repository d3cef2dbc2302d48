"""Hugging Face transformers models as zoo plugins; MiniGPT <-> GPT-2 conversion."""
