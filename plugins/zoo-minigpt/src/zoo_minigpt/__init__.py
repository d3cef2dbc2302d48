"""MiniGPT: a GPT-style decoder-only transformer registered with zoo as type ``minigpt``."""
